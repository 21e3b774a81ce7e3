"""The web page at ``/`` and the API docs at ``/docs``: static files shipped inside the
packages (no build step, no CDN), served next to the API so ``searchagent serve`` is all a
browser needs, offline too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"
DOCS_PREFIX = "/docs-assets"            # Swagger UI's script, style sheet and icon
# The page loads without the API key (the key is typed into it); every API call it makes
# still carries the key.
PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                           "frame-ancestors 'none'; base-uri 'none'"}


def mount_page(app: FastAPI) -> None:
    """``GET /`` -> index.html; ``/static/*`` -> its script and style sheet."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers=PAGE_HEADERS)

    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")


def mount_docs(app: FastAPI) -> None:
    """``GET /docs`` -> Swagger UI over ``/openapi.json``, its files from the swagger-ui-py
    package (FastAPI's own /docs loads them from a CDN, so it was blank offline). Create
    the app with ``docs_url=None``."""
    spec = importlib.util.find_spec("swagger_ui")
    assets = Path(spec.submodule_search_locations[0]) / "static"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} API",
            swagger_js_url=f"{DOCS_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_PREFIX}/favicon-32x32.png")

    app.mount(DOCS_PREFIX, StaticFiles(directory=assets), name="docs-assets")
