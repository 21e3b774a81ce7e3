"""The REST QA endpoint: ``create_app`` (app.py) over the answer service (service.py)."""

from searchagent.server.app import create_app

__all__ = ["create_app"]
