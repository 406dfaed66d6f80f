"""Every route's lock: who is calling (an API token, a console session, or nobody) and
whether the policy in `coordinator.access` lets them take the route's action.

Each route depends on exactly one `allow(Action.X)`, or is a `locked_route` (the same
lock without FastAPI's dependency solving, for the busiest); a test walks the app and
fails on a route without one. An API token comes as `Authorization: Bearer loa_...`; a
logged-in browser session is accepted by the same routes. A page that needs a login
redirects a browser to /login; the API answers 401 with `WWW-Authenticate: Bearer`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import Route

from coordinator.access import ANONYMOUS, Action, Principal, Role, Verdict, decide
from coordinator.tokens import principal_for_token
from coordinator.web.security import LoginRequired, current_account
from coordinator.web.state import web_state

bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="An API token made with `loa tokens add` (shown once).")


async def principal_of(request: Request, credentials: HTTPAuthorizationCredentials | None
                       ) -> Principal:
    """The caller; 401 for a token that is unknown or revoked."""
    st = web_state(request)
    if credentials is not None:
        principal = await principal_for_token(st.redis, st.keys, credentials.credentials)
        if principal is None:
            raise HTTPException(401, "this API token is not valid (unknown or revoked)",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal
    account = await current_account(request)
    if account is None:
        return ANONYMOUS
    return Principal(kind="session", username=account.username, role=Role(account.role),
                     name=account.name, person_id=account.person_id)


def refuse(request: Request, verdict: Verdict) -> HTTPException | LoginRequired:
    """What to raise for a refused action: a browser on a page is sent to log in."""
    if (verdict.status == 401 and not request.url.path.startswith("/api")
            and "text/html" in request.headers.get("accept", "")):
        return LoginRequired(request.url.path)
    headers = {"WWW-Authenticate": "Bearer"} if verdict.status == 401 else None
    return HTTPException(verdict.status, verdict.why, headers=headers)


async def authorize(request: Request, action: Action,
                    credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The caller, when the policy lets them take `action`; raises the refusal otherwise."""
    principal = await principal_of(request, credentials)
    verdict = decide(principal, action)
    if not verdict.allowed:
        raise refuse(request, verdict)
    request.state.principal = principal
    if principal.kind == "session":  # pages show who is logged in
        request.state.account = principal
    return principal


def allow(action: Action) -> Callable[..., Awaitable[Principal]]:
    """The dependency that lets a request in when its caller may take `action`."""

    async def authorized(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
        return await authorize(request, action, credentials)

    authorized.action = action  # type: ignore[attr-defined]  # read by the route test
    authorized.__name__ = f"allow_{action.name}"
    return authorized


Endpoint = Callable[[Request], Awaitable[Response]]


def locked_route(path: str, action: Action, endpoint: Endpoint, method: str) -> Route:
    """A plain Starlette route taking `action`, behind the same lock as `allow(action)`.
    For the busiest, simplest routes only (a provider's status callbacks, two an SMS; the
    reports of `POST /api/reports`): it skips FastAPI's dependency solving and request
    handling, a third of a callback's time. Errors are raised as HTTPException (or
    RequestValidationError), as in any route; the lock is taken before the body is read."""

    async def locked(request: Request) -> Response:
        await authorize(request, action, await bearer(request))
        return await endpoint(request)

    locked.action = action  # type: ignore[attr-defined]  # read by the route test
    locked.__name__ = f"{endpoint.__name__}_{action.name}"
    return Route(path, locked, methods=[method], include_in_schema=False)


def action_of(dependency: Any) -> Action | None:
    """The action an `allow(...)` dependency, or a `locked_route`'s endpoint, guards (None
    for any other callable)."""
    found = getattr(dependency, "action", None)
    return found if isinstance(found, Action) else None


def route_actions(route: Any) -> list[Action]:
    """The actions a route of the app is locked with: one for a locked route (a FastAPI
    route by its `allow` dependency, a plain one by `locked_route`)."""
    if isinstance(route, APIRoute):
        found = [action_of(d.call) for d in route.dependant.dependencies]
    else:
        found = [action_of(getattr(route, "endpoint", None))]
    return [action for action in found if action is not None]


def locked_router(action: Action, **options: Any) -> APIRouter:
    """A router all of whose routes take `action` (and are let in only when allowed)."""
    return APIRouter(dependencies=[Depends(allow(action))], **options)
