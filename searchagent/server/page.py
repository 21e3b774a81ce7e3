"""The web page at ``/``: static files shipped inside the package (no build step, no CDN),
served next to the API so ``searchagent serve`` is all a browser needs."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"
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
