"""The API's schema and its reading pages, behind the lock of one action (by default only
monitors and admins: the schema says how the deployment is built; LOA_PUBLIC_API_DOCS=true
opens them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from coordinator.access import Action
from coordinator.web.auth import locked_router


def api_docs(action: Action) -> APIRouter:
    """`/openapi.json` and `/docs`, for callers who may take `action`."""
    router = locked_router(action, include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi(request: Request) -> JSONResponse:
        """The OpenAPI schema of the JSON API."""
        return JSONResponse(request.app.openapi())

    @router.get("/docs", response_class=HTMLResponse)
    async def docs() -> HTMLResponse:
        """Swagger UI over the schema."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Loa API")

    return router
