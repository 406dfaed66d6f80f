"""How the web app answers errors: a login redirect, JSON for the API and for clients
that do not want HTML, a page for browsers, and the fields of an invalid request."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordinator.web.pages import page
from coordinator.web.security import LoginRequired


async def to_login(request: Request, exc: Exception) -> RedirectResponse:
    """A page that needs a login sends the browser to /login, and back after it."""
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/login?{urlencode({'next': exc.next_path})}", status_code=303)


async def http_error(request: Request, exc: Exception) -> Response:
    """JSON for the API and for clients that do not want HTML; a page for browsers."""
    assert isinstance(exc, StarletteHTTPException)
    wants_html = "text/html" in request.headers.get("accept", "")
    if request.url.path.startswith("/api") or not wants_html:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)
    shown = page(request, "decided.html", exc.status_code, message=str(exc.detail))
    shown.headers.update(exc.headers or {})
    return shown


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each invalid field and what is wrong with it."""
    assert isinstance(exc, RequestValidationError)
    errors = [_named(e, exc.body) for e in exc.errors()]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse(status_code=422, content=jsonable_encoder(
        {"detail": f"invalid request: {summary}", "errors": errors}))


def _named(error: Any, body: Any) -> dict[str, str]:
    """One error as the answer names it: the field's path ("body": the whole of it). A body
    FastAPI could not read as JSON comes as the character's offset where reading stopped:
    named as the body, at its line and column. Pure."""
    loc = error.get("loc", ())
    if error.get("type") == "json_invalid" and loc[1:] and isinstance(loc[-1], int):
        why = (error.get("ctx") or {}).get("error") or error.get("msg", "")
        text = body if isinstance(body, str) else ""
        line = text.count("\n", 0, loc[-1]) + 1
        column = loc[-1] - (text.rfind("\n", 0, loc[-1]) + 1) + 1
        return {"field": "body",
                "message": f"not valid JSON: {why} at line {line} column {column}"}
    return {"field": ".".join(str(p) for p in loc if p != "body") or "body",
            "message": error.get("msg", "")}
