"""An incident's after-action record on the console: Markdown, JSON and the chart of its
deliveries over time (coordinator.after_action), for duty officers and admins."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from coordinator.access import Action, Principal
from coordinator.after_action.chart import deliveries_chart
from coordinator.after_action.figures import Gathered, chart_series, figures
from coordinator.after_action.gather import gather
from coordinator.after_action.markdown import record_markdown
from coordinator.web.auth import allow
from coordinator.web.ids import IncidentId
from coordinator.web.state import web_state

records = APIRouter(prefix="/console/incidents", include_in_schema=False)
Reader = Annotated[Principal, Depends(allow(Action.incident_read))]


async def _gathered(request: Request, incident_id: str) -> Gathered:
    st = web_state(request)
    found = await gather(st.redis, st.keys, st.city, incident_id)
    if found is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return found


@records.get("/{incident_id}/record.md")
async def record_md(incident_id: IncidentId, request: Request, account: Reader) -> Response:
    """The after-action record as Markdown (its chart: record.png beside it)."""
    text = record_markdown(figures(await _gathered(request, incident_id),
                                   web_state(request).settings.correction_goal_s), "record.png")
    return Response(text, media_type="text/markdown; charset=utf-8", headers={
        "Content-Disposition": f'inline; filename="{incident_id}-record.md"'})


@records.get("/{incident_id}/record.json")
async def record_json(incident_id: IncidentId, request: Request, account: Reader) -> Response:
    """The after-action record's figures as JSON."""
    body = json.dumps(figures(await _gathered(request, incident_id),
                              web_state(request).settings.correction_goal_s),
                      ensure_ascii=False)
    return Response(body, media_type="application/json")


@records.get("/{incident_id}/record.png")
async def record_png(incident_id: IncidentId, request: Request, account: Reader) -> Response:
    """The chart of the incident's deliveries over time."""
    gathered = await _gathered(request, incident_id)
    png = deliveries_chart(chart_series(gathered), f"{incident_id}: deliveries over time")
    return Response(png, media_type="image/png")
