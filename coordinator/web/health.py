"""/healthz (do Redis and the broker answer?) and /metrics (Prometheus) of the web
process."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from coordinator.access import Action, Principal, decide
from coordinator.broker import missing_topics
from coordinator.errors import BrokerUnavailable
from coordinator.web.auth import allow
from coordinator.web.state import State, web_state

health = APIRouter(include_in_schema=False)


@health.get("/healthz")
async def healthz(request: Request,
                  principal: Annotated[Principal, Depends(allow(Action.public_read))]
                  ) -> JSONResponse:
    """200 when Redis and the broker answer, 503 when not; what fails is named only to
    monitors and admins (it says how the deployment is built)."""
    st = web_state(request)
    checks: dict[str, str] = {}
    try:
        await st.redis.ping()
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unreachable: {exc}"
    checks["broker"] = await _broker_check(st)
    healthy = all(v == "ok" for v in checks.values())
    shown: dict[str, Any] = {"status": "ok" if healthy else "degraded"}
    if decide(principal, Action.ops_read).allowed:
        shown["checks"] = checks
    return JSONResponse(shown, status_code=200 if healthy else 503)


@health.get("/metrics")
async def metrics(_: Annotated[Principal, Depends(allow(Action.ops_read))]) -> Response:
    """Prometheus metrics of the web process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _broker_check(st: State) -> str:
    try:
        missing = await missing_topics(st.settings, timeout_s=3.0)
    except BrokerUnavailable as exc:
        return f"unreachable: {exc}"
    if missing:
        return f"missing topics: {', '.join(missing)} (start a worker, or `loa doctor`)"
    if not st.producer.started:
        try:
            await st.producer.ensure_started()
        except BrokerUnavailable as exc:
            return f"producer cannot connect: {exc}"
    return "ok"
