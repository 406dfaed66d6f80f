"""`loa incident report`: an incident's after-action record, as Markdown or JSON;
`loa incident merge`: one incident into another."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import typer

from coordinator import queries, topics
from coordinator.access import Action
from coordinator.after_action.chart import deliveries_chart
from coordinator.after_action.figures import Gathered, chart_series, figures
from coordinator.after_action.gather import gather
from coordinator.after_action.markdown import record_markdown
from coordinator.broker import Producer
from coordinator.cli.common import city_or_fail, env_settings, fail, out, with_redis
from coordinator.cli.credentials import ReasonOpt, TokenOpt, cli_principal
from coordinator.errors import LoaError
from coordinator.events import IncidentMerged, RedraftRequested, utcnow
from coordinator.keys import Keys
from coordinator.outcomes import outcome_of
from coordinator.playbooks.models import parse_duration
from coordinator.settings import Settings
from coordinator.state import Redis
from coordinator.statements.promises import set_promise

incident_app = typer.Typer(help="One incident's records.", no_args_is_help=True)


@incident_app.command("report")
def report_command(
    incident_id: str,
    fmt: Annotated[Literal["md", "json"], typer.Option(
        "--format", help="md (to read and file) or json (to process)")] = "md",
    output: Annotated[Path | None, typer.Option(
        help="write the record here, and its chart beside it (NAME-deliveries.png)")] = None,
    chart: Annotated[Path | None, typer.Option(
        help="write the chart of deliveries over time here (PNG)")] = None,
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
) -> None:
    """The after-action record: timeline, time from first report to first statement, time at
    each approval level, who approved each statement, the exact texts sent, reach per area
    and channel (targeted, sent, delivered, failed), corrections, deliveries over time."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> Gathered | None:
        await cli_principal(redis, keys, s, token, operator_reason, Action.incident_read)
        return await gather(redis, keys, city_or_fail(s), incident_id)

    gathered = with_redis(work)
    if gathered is None:
        raise fail(f"no incident {incident_id} (see `loa incidents`)")
    record = figures(gathered, env_settings().correction_goal_s)
    if chart is None and output is not None:
        chart = output.with_name(f"{output.stem}-deliveries.png")
    for path in (output, chart):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    if chart is not None:
        chart.write_bytes(deliveries_chart(chart_series(gathered),
                                           f"{incident_id}: deliveries over time"))
    if fmt == "json":
        text = json.dumps(record, ensure_ascii=False, indent=1)
    else:
        link = (chart.name if output is not None and chart.parent == output.parent
                else str(chart)) if chart else None
        text = record_markdown(record, link)
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)
        return
    output.write_text(text + "\n", encoding="utf-8")
    out.print(f"wrote {output}" + (f" and {chart}" if chart else ""))


@incident_app.command("merge")
def merge_command(
    incident_id: str,
    into: Annotated[str, typer.Option("--into", help="the incident that carries on")],
    reason: Annotated[str, typer.Option(help="why, for the timeline")] = "",
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
) -> None:
    """Merge INCIDENT_ID into another (the same rumour reported in another language, two
    reports of one fire): it closes, pointing there; its reports and its claim's wordings
    count there, so later reports like them join there too. A pending approval of it is
    withdrawn."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> dict[str, object]:
        principal = await cli_principal(redis, keys, s, token, operator_reason,
                                        Action.incident_steer)
        for known in (incident_id, into):
            if not await redis.exists(keys.incident(known)):
                raise LoaError(f"no incident {known} (see `loa incidents`)")
        event = IncidentMerged(id=f"act-{uuid.uuid4().hex[:20]}", incident_id=incident_id,
                               into=into, reason=reason, actor=principal.actor, via="cli")
        return await _steer(redis, keys, s, event)

    _say(with_redis(work))


@incident_app.command("fact")
def fact_command(
    incident_id: str,
    fact: Annotated[str, typer.Option(help="the verified fact the correction states")],
    source: Annotated[str, typer.Option(help="who or what establishes it (a department, a "
                                             "test result, an official document)")],
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
) -> None:
    """State the fact that corrects a false claim, and its source: kept on the incident, the
    playbook's correction (Claim / Fact / Source) is drafted again with them and goes to
    its approvers as a new version."""

    async def work(redis: Redis, keys: Keys, s: Settings) -> dict[str, object]:
        principal = await cli_principal(redis, keys, s, token, operator_reason,
                                        Action.incident_steer)
        playbook = await queries.incident_playbook(redis, keys, incident_id)
        if playbook is None:
            raise LoaError(f"no incident {incident_id} (see `loa incidents`)")
        event = RedraftRequested(id=f"act-{uuid.uuid4().hex[:20]}", incident_id=incident_id,
                                 purpose="reselect", playbook_id=playbook or None, fact=fact,
                                 fact_source=source, note="fact stated",
                                 actor=principal.actor, via="cli")
        return await _steer(redis, keys, s, event)

    _say(with_redis(work))


async def _steer(redis: Redis, keys: Keys, s: Settings,
                 event: IncidentMerged | RedraftRequested) -> dict[str, object]:
    """Put a duty officer's action on the incident's topic; what the worker made of it."""
    producer = Producer(s)
    await producer.start()
    try:
        await producer.send(topics.INCIDENT_EVENTS, event.incident_id, event.to_bytes())
    finally:
        await producer.stop()
    outcome = await outcome_of(redis, keys, event.id, timeout_s=30)
    if outcome is None:
        raise LoaError("sent, but not applied within 30s: is a worker running?")
    return outcome


def _say(outcome: dict[str, object]) -> None:
    if not outcome["accepted"]:
        raise fail(str(outcome["message"]))
    out.print(str(outcome["message"]), markup=False)


@incident_app.command("promise")
def promise_command(
    incident_id: str,
    within: Annotated[str | None, typer.Option(
        "--in", help="the next update is promised this soon: 30m, 2h")] = None,
    by: Annotated[str | None, typer.Option(
        help="... or by this time: HH:MM today (LOA_TIMEZONE), or ISO 8601")] = None,
    none: Annotated[bool, typer.Option("--none", help="withdraw the promise")] = False,
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
) -> None:
    """Promise the incident's next update (the public pages show it, CAP's <expires> follows
    it, the duty officers are reminded before it is due and alerted when it is broken), or
    withdraw the promise. Each publication sets it again from the playbook's follow_ups."""
    settings = env_settings()
    now = utcnow()
    if sum(x is not None for x in (within, by)) + none != 1:
        raise fail("say one of --in, --by or --none")
    due = None if none else _due(within, by, now, settings.timezone)
    if due is not None and due <= now:
        raise fail(f"--by: {due.isoformat()} has passed")

    async def work(redis: Redis, keys: Keys, s: Settings) -> str:
        principal = await cli_principal(redis, keys, s, token, operator_reason,
                                        Action.incident_steer)
        try:
            return await set_promise(redis, keys, incident_id, due, principal.actor, "cli", now)
        except LookupError as exc:
            raise LoaError(f"{exc} (see `loa incidents`)") from exc

    out.print(with_redis(work), markup=False)


def _due(within: str | None, by: str | None, now: datetime, tz: str) -> datetime:
    if within is not None:
        try:
            return now + timedelta(seconds=parse_duration(within))
        except ValueError as exc:
            raise fail(f"--in: {exc}") from exc
    assert by is not None
    try:
        if len(by) <= 5 and ":" in by:
            hour, minute = (int(x) for x in by.split(":"))
            local = now.astimezone(ZoneInfo(tz))
            return local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        found = datetime.fromisoformat(by)
    except ValueError as exc:
        raise fail(f"--by: {by!r} is neither HH:MM nor an ISO 8601 time") from exc
    return found if found.tzinfo else found.replace(tzinfo=ZoneInfo(tz))
