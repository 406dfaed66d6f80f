"""`loa`: the command line of duty officers, approvers and operators."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from coordinator import queries
from coordinator.access import Action, Principal, decide
from coordinator.broker import Producer
from coordinator.city import City, load_city
from coordinator.cli.accounts import accounts_app
from coordinator.cli.areas import areas_app
from coordinator.cli.audit import audit_app
from coordinator.cli.common import (
    JsonOpt,
    city_or_fail,
    env_settings,
    err,
    fail,
    out,
    print_json,
    with_redis,
)
from coordinator.cli.credentials import ReasonOpt, TokenOpt, cli_principal
from coordinator.cli.decisions import approve, inbox, reject
from coordinator.cli.incident import incident_app
from coordinator.cli.migrate import migrate_command
from coordinator.cli.processes import scheduler, web, worker
from coordinator.cli.reads import approvals, incidents, show, statements
from coordinator.cli.sandbox import outbox, sandbox_app
from coordinator.cli.secrets import secrets_app
from coordinator.cli.subscribers import dispatch_watch, subscribers_app
from coordinator.cli.tokens import login, tokens_app
from coordinator.cli.withdraw import withdraw
from coordinator.errors import BrokerUnavailable, LoaError
from coordinator.events import Report, Severity
from coordinator.keys import Keys
from coordinator.settings import Settings, load_settings
from coordinator.state import Redis

app = typer.Typer(help="Loa: crisis communication coordinator.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
playbooks_app = typer.Typer(help="Check playbooks and see which one an incident gets.",
                            no_args_is_help=True)
for _name, _group in (("playbooks", playbooks_app), ("subscribers", subscribers_app),
                      ("sandbox", sandbox_app), ("accounts", accounts_app),
                      ("tokens", tokens_app), ("secrets", secrets_app), ("audit", audit_app),
                      ("incident", incident_app), ("areas", areas_app)):
    app.add_typer(_group, name=_name)
for _process in (worker, web, scheduler):  # the long-running processes `loa up` starts
    app.command()(_process)
for _read in (incidents, show, approvals, statements):  # what staff read
    app.command()(_read)


@app.command()
def up() -> None:
    """Start everything here: broker, Redis, worker, scheduler and web (Ctrl-C stops all)."""
    from coordinator.up import run_up

    raise typer.Exit(run_up(load_settings()))


@app.command()
def report(
    kind: Annotated[str, typer.Option(help="e.g. flood, fire, power-outage")],
    severity: Annotated[Severity, typer.Option(help="minor, moderate, severe or extreme")],
    area: Annotated[str, typer.Option(help="area code of the map in force (loa areas maps)")],
    title: Annotated[str, typer.Option()],
    details: Annotated[str, typer.Option()] = "",
    reporter: Annotated[str, typer.Option(help="who reports (a detail; the audit trail names "
                                               "the credential)")] = "",
    report_id: Annotated[str | None, typer.Option("--id", help="your id; a retry is safe")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the incident and its approval request")]
    = False,
    exercise: Annotated[bool, typer.Option(
        help="a drill: messages marked [DIỄN TẬP]/[EXERCISE], only to subscribers who opted "
             "into drills, kept apart from real statements")] = False,
    drill_list: Annotated[str | None, typer.Option(
        help="with --exercise: only this test list (subscribers added with --list)")] = None,
    claim: Annotated[str, typer.Option(
        help="false information (kinds misinformation, rumor): the claim, in the words that "
             "are spreading")] = "",
    spreading: Annotated[list[str] | None, typer.Option(
        help="where the claim is spreading: a link or a screenshot described (repeatable)")]
    = None,
    token: TokenOpt = None,
    operator_reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """File a report (as the API does: outboxed in Redis, then put on the broker)."""
    from coordinator.reports.filing import ReportIdTaken, file_report

    settings = env_settings()
    city = load_city(settings.config_dir, settings.area_map)
    if not settings.kafka_url:
        raise fail("no broker: set LOA_KAFKA_URL or start Loa with `make up`")

    async def work(redis: Redis, keys: Keys, s: Settings) -> dict[str, Any]:
        principal = await cli_principal(redis, keys, s, token, operator_reason,
                                        Action.report_file)
        rep = _cli_report(principal, city, dict(
            kind=kind, severity=severity, area=area, title=title, details=details,
            reporter=reporter, exercise=exercise, drill_list=drill_list, claim=claim,
            spreading=spreading or []), report_id)
        producer = Producer(s)
        await producer.start()  # no broker: nothing is kept, the command fails
        result: dict[str, Any] = {"report": rep.id, "status": "accepted",
                                  "actor": principal.actor}
        try:
            await file_report(redis, keys, producer, rep)
        except ReportIdTaken as exc:
            raise LoaError(f"--id: {exc}") from exc
        except BrokerUnavailable as exc:
            # Kept in the outbox before the broker failed: accepted all the same, as the
            # API answers 202, and a worker sends it. A failure here had the operator file
            # it again, under a new id: twice.
            result |= {"broker_not_reached": str(exc)}
        finally:
            await producer.stop()
        if wait:
            result |= await _wait_for_plan(redis, keys, rep.id)
        return result

    result = with_redis(work)
    if as_json:
        print_json(result)
        return
    out.print(f"report [bold]{result['report']}[/] accepted (by {result['actor']})")
    if "broker_not_reached" in result:
        err.print(f"the broker did not take it now ({result['broker_not_reached']}); it is "
                  "kept, and a worker sends it once the broker is back: do not file it again")
    if "incident" in result:
        out.print(f"incident [bold]{result['incident']}[/] ({result['status']}), "
                  f"playbook {result.get('playbook') or '-'}")
        if result.get("approval"):
            a = result["approval"]
            out.print(f"approval [bold]{a['id']}[/]: level {a['level']} ({a['department']}: "
                      f"{', '.join(a['approvers'])}), deadline {a['deadline']}")


def _cli_report(principal: Principal, city: City, fields: dict[str, Any],
                report_id: str | None) -> Report:
    """The report the CLI files for `principal`; LoaError naming the bad option."""
    from pydantic import ValidationError

    from coordinator.reports.filing import report_problems
    from coordinator.reports.sources import namespaced_report_id, source_of

    try:
        rep = Report(id=namespaced_report_id(principal, report_id), received_via="cli",
                     source=source_of(principal), **fields)
    except ValidationError as exc:
        raise LoaError("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from exc
    problems = report_problems(rep, city)
    if problems:
        raise LoaError("; ".join(f"--{field}: {why}" for field, why in problems))
    scoped = decide(principal, Action.report_file, rep.area, {rep.area: city.ancestors(rep.area)})
    if not scoped.allowed:
        raise LoaError(scoped.why)
    return rep


async def _wait_for_plan(redis: Redis, keys: Keys, report_id: str, timeout_s: float = 30.0
                         ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        incident_id = await redis.hget(keys.report(report_id), "incident")
        if incident_id:
            incident = await queries.incident_detail(redis, keys, incident_id) or {}
            if incident.get("playbook"):
                return {"incident": incident_id, "status": incident["status"],
                        "playbook": incident["playbook"], "approval": incident.get("approval")}
        await asyncio.sleep(0.2)
    raise LoaError(f"report {report_id} was accepted but not planned within {timeout_s:.0f}s: "
                   "is a worker running? (`loa doctor`)")


@playbooks_app.command("validate")
def playbooks_validate(
    path: Annotated[Path | None, typer.Argument(help="a playbook file or folder")] = None,
) -> None:
    """Check playbooks: every problem as file:line: field: why; languages left to others."""
    from coordinator.playbooks.loader import check_playbook_file, language_notes

    settings = load_settings()
    city = city_or_fail(settings)
    target = path or settings.playbooks_dir
    files = sorted(target.glob("*.yaml")) if target.is_dir() else [target]
    if not files:
        raise fail(f"{target}: no playbooks (*.yaml) found")
    bad = 0
    for file in files:
        playbook, problems = check_playbook_file(file, city)
        if problems:
            bad += 1
            for problem in problems:
                err.print(problem, markup=False, highlight=False, soft_wrap=True)
        elif playbook is not None:
            out.print(f"[green]ok[/] {file} ({playbook.id})")
            for note in language_notes(playbook, city):
                out.print(f"  note: {note}", markup=False, highlight=False)
    if bad:
        raise fail(f"{bad} of {len(files)} playbook(s) do not validate")


@playbooks_app.command("explain")
def playbooks_explain(
    kind: Annotated[str, typer.Option()],
    severity: Annotated[Severity, typer.Option()],
    area: Annotated[str, typer.Option()],
    as_json: JsonOpt = False,
) -> None:
    """Which playbook an incident would get, and why each other one does not fit."""
    from coordinator.errors import PlaybookError
    from coordinator.plan.selection import select_playbook
    from coordinator.playbooks.loader import load_playbooks

    settings = load_settings()
    city = city_or_fail(settings)
    if area not in city.areas:
        raise fail(f"--area: {city.unknown_area(area)}")
    try:
        playbooks = load_playbooks(settings.playbooks_dir, city)
    except PlaybookError as exc:
        raise fail(f"playbooks do not validate:\n{exc}") from exc
    selection = select_playbook(playbooks, kind, severity, area, city)
    if as_json:
        print_json({"playbook": selection.playbook_id, "reason": selection.reason,
                     "candidates": [c.__dict__ for c in selection.candidates]})
        return
    out.print(f"[bold]{selection.playbook_id}[/]: {selection.reason}")
    for c in sorted(selection.candidates, key=lambda c: c.playbook_id):
        mark = "[green]matches[/]" if c.matches else "[dim]no[/]"
        out.print(f"  {c.playbook_id:20} {mark}  {c.why}")



@app.command()
def doctor(
    stuck_after: Annotated[float, typer.Option(
        help="seconds after which unfinished work counts as stuck")] = 120.0,
    seen_dead_letters: Annotated[bool, typer.Option(
        "--seen-dead-letters", help="note the dead letters so far as looked at")] = False,
) -> None:
    """Check this setup and the work in it; exit 1 on a problem (e.g. stuck work)."""
    from coordinator.doctor import run_doctor

    raise typer.Exit(run_doctor(env_settings(), out, stuck_after, seen_dead_letters))


app.command("dispatch-watch")(dispatch_watch)
app.command()(outbox)
app.command()(login)
app.command()(inbox)
app.command()(approve)
app.command()(reject)
app.command()(withdraw)
app.command("migrate")(migrate_command)


def main() -> None:
    """Entry point of the `loa` command."""
    app()
