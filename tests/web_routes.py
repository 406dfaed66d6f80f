"""The web app's routes as tests see them: the app built without connecting to anything,
and its routes flattened through the routers it includes. Shared by the unit access rules
and the integration trust checks."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from coordinator.settings import Settings
from coordinator.web.app import create_web_app


def offline_web_app() -> FastAPI:
    """The web app, built with unreachable broker and Redis URLs (nothing is contacted)."""
    return create_web_app(Settings(kafka_url="kafka://127.0.0.1:1",
                                   redis_url="redis://127.0.0.1:1"))


def flat_routes(routes: list[Any]) -> list[Any]:
    """The app's routes, through included routers."""
    out: list[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            out += flat_routes(inner.routes)
        else:
            out.append(route)
    return out
