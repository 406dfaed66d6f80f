"""`loa`: the command line of duty officers, approvers and operators."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from coordinator import queries
from coordinator.broker import Producer
from coordinator.city import load_city
from coordinator.errors import LoaError
from coordinator.events import Decision, Report, Severity
from coordinator.keys import Keys
from coordinator.settings import Settings, load_settings
from coordinator.state import Redis, connect

app = typer.Typer(help="Loa: crisis communication coordinator.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
subscribers_app = typer.Typer(help="The people who receive statements.", no_args_is_help=True)
app.add_typer(subscribers_app, name="subscribers")
sandbox_app = typer.Typer(help="Local stand-ins for Twilio and SMTP (what `loa up` starts).",
                          no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
playbooks_app = typer.Typer(help="Check playbooks and see which one an incident gets.",
                            no_args_is_help=True)
app.add_typer(playbooks_app, name="playbooks")
out = Console()
err = Console(stderr=True)
T = TypeVar("T")
SANDBOX_SID = "AC" + "0" * 32
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _settings() -> Settings:
    return load_settings().with_running_stack()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error in plain words and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def _with_redis(work: Callable[[Redis, Keys, Settings], Awaitable[T]]) -> T:
    settings = _settings()
    if not settings.redis_url:
        raise fail("no Redis: set LOA_REDIS_URL or start Loa with `make up` (`loa doctor` helps)")

    async def run() -> T:
        redis = connect(settings.redis_url or "")
        try:
            return await work(redis, Keys(settings.redis_prefix), settings)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except OSError as exc:
        raise fail(f"cannot reach Redis at {settings.redis_url}: {exc}") from exc


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, ensure_ascii=False, default=str))


@app.command()
def up() -> None:
    """Start everything on this machine: broker, Redis, worker and web (Ctrl-C stops all)."""
    from coordinator.up import run_up

    raise typer.Exit(run_up(load_settings()))


@app.command()
def worker() -> None:
    """Run the pipeline's agents (scale out by running more, against a real Kafka and Redis)."""
    from coordinator.worker import run_worker

    run_worker(_settings())


@app.command()
def web() -> None:
    """Serve the HTTP API and the public pages."""
    import uvicorn

    from coordinator.observability import configure_logging
    from coordinator.web.app import create_web_app

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(create_web_app(settings), host=settings.web_host, port=settings.web_port,
                log_level="warning")


@app.command()
def report(
    kind: Annotated[str, typer.Option(help="e.g. flood, fire, power-outage")],
    severity: Annotated[Severity, typer.Option(help="minor, moderate, severe or extreme")],
    area: Annotated[str, typer.Option(help="area code from config/areas.yaml")],
    title: Annotated[str, typer.Option()],
    details: Annotated[str, typer.Option()] = "",
    reporter: Annotated[str, typer.Option(help="who reports")] = "",
    report_id: Annotated[str | None, typer.Option("--id", help="your id; a retry is safe")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the incident and its approval request")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """File a report (as the API does: outboxed in Redis, then put on the broker)."""
    from pydantic import ValidationError

    from coordinator.reports.filing import file_report, report_problems

    settings = _settings()
    try:
        rep = Report(id=report_id or f"rep-{uuid.uuid4().hex[:16]}", kind=kind, severity=severity,
                     area=area, title=title, details=details, reporter=reporter,
                     received_via="cli")
    except ValidationError as exc:
        raise fail("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from exc
    problems = report_problems(rep, load_city(settings.config_dir))
    if problems:
        raise fail("; ".join(f"--{field}: {why}" for field, why in problems))
    if not settings.kafka_url:
        raise fail("no broker: set LOA_KAFKA_URL or start Loa with `make up`")

    async def work(redis: Redis, keys: Keys, s: Settings) -> dict[str, Any]:
        producer = Producer(s)
        await producer.start()
        try:
            await file_report(redis, keys, producer, rep)
        finally:
            await producer.stop()
        result: dict[str, Any] = {"report": rep.id, "status": "accepted"}
        if wait:
            result |= await _wait_for_plan(redis, keys, rep.id)
        return result

    try:
        result = _with_redis(work)
    except LoaError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        _print_json(result)
        return
    out.print(f"report [bold]{rep.id}[/] accepted")
    if "incident" in result:
        out.print(f"incident [bold]{result['incident']}[/] ({result['status']}), "
                  f"playbook {result.get('playbook') or '-'}")
        if result.get("approval"):
            a = result["approval"]
            out.print(f"approval [bold]{a['id']}[/]: level {a['level']} ({a['department']}: "
                      f"{', '.join(a['approvers'])}), deadline {a['deadline']}")


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


@app.command()
def incidents(as_json: JsonOpt = False) -> None:
    """List incidents, newest first."""
    rows = _with_redis(lambda r, k, s: queries.list_incidents(r, k))
    if as_json:
        _print_json(rows)
        return
    table = Table("incident", "status", "severity", "kind", "area", "playbook", "reports", "title")
    for row in rows:
        table.add_row(row["id"], row["status"], row["severity"], row["kind"], row["area"],
                      row["playbook"] or "-", row["report_count"], row["title"])
    out.print(table)


@app.command()
def show(incident_id: str, as_json: JsonOpt = False) -> None:
    """An incident and its timeline: reports, playbook and why, draft, approval, statement."""
    found = _with_redis(lambda r, k, s: queries.incident_detail(r, k, incident_id))
    if found is None:
        raise fail(f"no incident {incident_id} (see `loa incidents`)")
    if as_json:
        _print_json(found)
        return
    out.print(f"[bold]{found['id']}[/] {found['title']}  [{found['status']}]")
    out.print(f"{found['kind']} · {found['severity']} · {found['area']} · "
              f"{found['report_count']} report(s) · playbook {found['playbook'] or '-'}")
    if found.get("status_reason"):
        out.print(f"[yellow]{found['status_reason']}[/]")
    if found.get("dispatch"):
        d = found["dispatch"]
        for channel in ("sms", "email"):
            if f"targeted:{channel}" in d:
                out.print(f"{channel}: targeted {d[f'targeted:{channel}']}, "
                          f"sent {d.get(f'{channel}:sent', 0)}, "
                          f"delivered {d.get(f'{channel}:delivered', 0)}, "
                          f"failed {d.get(f'{channel}:failed', 0)}, "
                          f"skipped {d.get(f'{channel}:skipped', 0)}")
    table = Table("when (UTC)", "what", "who", "via", "detail")
    for entry in found["timeline"]:
        detail = ", ".join(f"{k}={v}" for k, v in entry["detail"].items())
        table.add_row(entry["at"][:19], entry["action"], entry["actor"], entry["interface"],
                      f"{entry.get('subject') or ''} {detail}".strip())
    out.print(table)


@app.command()
def approvals(
    all_: Annotated[bool, typer.Option("--all", help="also decided ones")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Approval requests waiting for a decision (by deadline)."""
    rows = _with_redis(lambda r, k, s: queries.list_approvals(r, k, pending_only=not all_))
    if as_json:
        _print_json(rows)
        return
    table = Table("approval", "incident", "status", "level", "who holds it", "deadline (UTC)",
                  "time left")
    for row in rows:
        table.add_row(row["id"], row["incident_id"], _status(row),
                      f"{row['level']}/{row['levels']}",
                      f"{row['department']}: {', '.join(row['approvers'])}",
                      (row["deadline"] or "")[:19], _time_left(row["deadline"]))
    out.print(table)


def _status(row: dict[str, Any]) -> str:
    if row["status"] != "pending":
        return str(row["status"])
    return {"level": "pending", "held": "held (chain exhausted)",
            "duty_officer": "duty officer may sign off"}[row["phase"]]


def _time_left(deadline: str | None) -> str:
    from datetime import datetime

    if not deadline:
        return "-"
    left = datetime.fromisoformat(deadline).timestamp() - time.time()
    return f"{int(left // 60)}m{int(left % 60):02d}s" if left > 0 else "overdue"


@app.command()
def inbox(
    person: Annotated[str, typer.Option("--as", help="your person id (config/)")],
    as_json: JsonOpt = False,
) -> None:
    """Your prompts: approval requests, reminders, escalations, hold alerts."""
    rows = _with_redis(lambda r, k, s: queries.inbox(r, k, person))
    if as_json:
        _print_json(rows)
        return
    table = Table("when (UTC)", "what", "approval", "level", "now", "message")
    for row in rows:
        table.add_row(row["at"][:19], row["kind"], row["approval_id"], str(row["level"]),
                      row["status"] or "-", row["text"])
    out.print(table)


def _decide(approval_id: str, approver: str, verdict: str, comment: str, as_json: bool) -> None:
    settings = _settings()
    if not settings.kafka_url:
        raise fail("no broker: set LOA_KAFKA_URL or start Loa with `make up`")
    decision = Decision(id=f"dec-{uuid.uuid4().hex[:16]}", approval_id=approval_id,
                        approver_id=approver, verdict=verdict,  # type: ignore[arg-type]
                        comment=comment, via="cli")

    async def work(redis: Redis, keys: Keys, s: Settings) -> dict[str, Any]:
        if not await redis.exists(keys.approval(approval_id)):
            raise LoaError(f"no approval {approval_id} (see `loa approvals`)")
        from coordinator import topics

        producer = Producer(s)
        await producer.start()
        try:
            await producer.send(topics.DECISIONS, approval_id, decision.to_bytes())
        finally:
            await producer.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            raw = await redis.get(keys.decision(decision.id))
            if raw:
                return dict(json.loads(raw))
            await asyncio.sleep(0.2)
        raise LoaError(f"decision {decision.id} was sent but not applied within 30s: "
                       "is a worker running?")

    try:
        outcome = _with_redis(work)
    except LoaError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        _print_json(outcome)
    else:
        (out if outcome["accepted"] else err).print(outcome["message"])
    if not outcome["accepted"]:
        raise typer.Exit(2)


@app.command()
def approve(
    approval_id: str,
    approver: Annotated[str, typer.Option("--as", help="your approver id (config/)")],
    comment: Annotated[str, typer.Option()] = "",
    as_json: JsonOpt = False,
) -> None:
    """Approve a draft statement: it is published once the decision is applied."""
    _decide(approval_id, approver, "approve", comment, as_json)


@app.command()
def reject(
    approval_id: str,
    approver: Annotated[str, typer.Option("--as", help="your approver id")],
    reason: Annotated[str, typer.Option(help="why; the duty officer sees it")],
    as_json: JsonOpt = False,
) -> None:
    """Reject a draft statement: the incident goes back to the duty officer with your reason."""
    _decide(approval_id, approver, "reject", reason, as_json)


@app.command()
def statements(as_json: JsonOpt = False) -> None:
    """Published statements, newest first."""
    rows = _with_redis(lambda r, k, s: queries.published_statements(r, k))
    if as_json:
        _print_json(rows)
        return
    table = Table("statement", "incident", "severity", "area", "published (UTC)", "approved by",
                  "title")
    for row in rows:
        title = next((t["title"] for t in row["texts"] if t["channel"] == "web"), "")
        table.add_row(row["id"], row["incident_id"], row["severity"], row["area"],
                      (row["published_at"] or "")[:19], ", ".join(row["approved_by"]), title)
    out.print(table)


@playbooks_app.command("validate")
def playbooks_validate(
    path: Annotated[Path | None, typer.Argument(help="a playbook file or folder")] = None,
) -> None:
    """Check playbooks; print every problem as file:line: field: why."""
    from coordinator.playbooks.loader import check_playbook_file

    settings = load_settings()
    city = _city(settings)
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
    from coordinator.playbooks.loader import load_playbooks
    from coordinator.playbooks.selection import select_playbook

    settings = load_settings()
    city = _city(settings)
    if area not in city.areas:
        raise fail(f"--area: unknown area {area!r} (see config/areas.yaml)")
    try:
        playbooks = load_playbooks(settings.playbooks_dir, city)
    except PlaybookError as exc:
        raise fail(f"playbooks do not validate:\n{exc}") from exc
    selection = select_playbook(playbooks, kind, severity, area, city)
    if as_json:
        _print_json({"playbook": selection.playbook_id, "reason": selection.reason,
                     "candidates": [c.__dict__ for c in selection.candidates]})
        return
    out.print(f"[bold]{selection.playbook_id}[/]: {selection.reason}")
    for c in sorted(selection.candidates, key=lambda c: c.playbook_id):
        mark = "[green]matches[/]" if c.matches else "[dim]no[/]"
        out.print(f"  {c.playbook_id:20} {mark}  {c.why}")


def _city(settings: Settings) -> Any:
    try:
        return load_city(settings.config_dir)
    except LoaError as exc:
        raise fail(str(exc)) from exc


@app.command()
def doctor() -> None:
    """Check this setup and say in plain words what is wrong."""
    from coordinator.doctor import run_doctor

    raise typer.Exit(run_doctor(_settings(), out))


@subscribers_app.command("add")
def subscribers_add(
    area: Annotated[list[str], typer.Option(help="area code; repeat for more")],
    channel: Annotated[list[str], typer.Option(help="sms or email; repeat for both")],
    phone: Annotated[str | None, typer.Option()] = None,
    email: Annotated[str | None, typer.Option()] = None,
    language: Annotated[str, typer.Option()] = "vi",
    topic: Annotated[list[str] | None, typer.Option(help="incident kind; none = all")] = None,
    role: Annotated[str, typer.Option(help="resident, press or partner")] = "resident",
) -> None:
    """Add (or update) one subscriber."""
    from pydantic import ValidationError

    from coordinator.subscribers.models import Subscriber
    from coordinator.subscribers.registry import save_subscriber

    city = _city(load_settings())
    unknown = [a for a in area if a not in city.areas]
    if unknown:
        raise fail(f"--area: unknown area {', '.join(unknown)} (see config/areas.yaml)")
    try:
        sub = Subscriber.model_validate({
            "phone": phone, "email": email, "language": language, "areas": area,
            "topics": topic or ["*"], "channels": channel, "role": role,
            "consent_source": "cli"})
    except ValidationError as exc:
        raise fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'subscriber'}: "
                             f"{e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())) from exc
    changed = _with_redis(lambda r, k, s: save_subscriber(r, k, sub))
    out.print(f"{sub.id} {'saved' if changed else 'unchanged'}")


@subscribers_app.command("import")
def subscribers_import(path: Path) -> None:
    """Import a CSV file; every rejected row is listed with its line; re-importing the same
    file changes nothing."""
    from rich.progress import track

    from coordinator.subscribers.csvio import parse_csv
    from coordinator.subscribers.registry import save_subscriber

    city = _city(load_settings())
    try:
        rows = list(parse_csv(path.read_text(encoding="utf-8"), city, source=f"import:{path.name}"))
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{path}: cannot read: {exc}") from exc

    async def work(redis: Redis, keys: Keys, s: Settings) -> tuple[int, int]:
        saved = unchanged = 0
        for _, sub, _ in track(rows, description="importing", console=err):
            if sub is not None:
                if await save_subscriber(redis, keys, sub):
                    saved += 1
                else:
                    unchanged += 1
        return saved, unchanged

    saved, unchanged = _with_redis(work)
    rejected = [(line, why) for line, sub, why in rows if sub is None]
    for line, why in rejected:
        err.print(f"{path}:{line}: {why}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"{saved} saved, {unchanged} unchanged, {len(rejected)} rejected")
    if rejected:
        raise typer.Exit(1)


@subscribers_app.command("export")
def subscribers_export() -> None:
    """Print every subscriber as CSV (the import format)."""
    from coordinator.subscribers.csvio import to_csv
    from coordinator.subscribers.models import Subscriber

    async def work(redis: Redis, keys: Keys, s: Settings) -> list[Subscriber]:
        ids = sorted(await redis.smembers(keys.subs_all()))
        raws = await redis.mget([keys.subscriber(i) for i in ids]) if ids else []
        return [Subscriber.model_validate_json(r) for r in raws if r]

    typer.echo(to_csv(_with_redis(work)), nl=False)


@subscribers_app.command("remove")
def subscribers_remove(contact: str) -> None:
    """Opt a subscriber out by phone or email: nothing more is sent to them."""
    from channels.contacts import InvalidContact, e164
    from coordinator.subscribers.registry import set_status

    try:
        key = contact if "@" in contact else e164(contact, load_settings().phone_region)
    except InvalidContact as exc:
        raise fail(str(exc)) from exc
    found = _with_redis(lambda r, k, s: set_status(r, k, key, "opted_out"))
    if found is None:
        raise fail(f"no subscriber with {contact}")
    out.print(f"{found.id} opted out")


@app.command("dispatch-watch")
def dispatch_watch(
    statement_id: str,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 600.0,
) -> None:
    """Watch a statement's fan-out: a progress bar per channel until every delivery is done."""
    from rich.progress import Progress

    async def watch(redis: Redis, keys: Keys, s: Settings) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        with Progress(console=out) as progress:
            bars: dict[str, Any] = {}
            while time.monotonic() < deadline:
                d = await redis.hgetall(keys.dispatch(statement_id))
                finished = bool(d.get("queued_all"))
                for channel in ("sms", "email"):
                    total = int(d.get(f"targeted:{channel}", 0))
                    if not total:
                        continue
                    done = sum(int(d.get(f"{channel}:{k}", 0))
                               for k in ("sent", "failed", "skipped"))
                    if channel not in bars:
                        bars[channel] = progress.add_task(channel, total=total)
                    progress.update(bars[channel], completed=done, total=total)
                    finished = finished and done >= total
                if finished:
                    return dict(d)
                await asyncio.sleep(0.5)
        raise LoaError(f"{statement_id}: fan-out not finished after {timeout:.0f}s")

    try:
        counts = _with_redis(watch)
    except LoaError as exc:
        raise fail(str(exc)) from exc
    out.print(", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != "queued_all"))


@sandbox_app.command("sms")
def sandbox_sms(
    port: Annotated[int, typer.Option()] = 8081,
    account_sid: Annotated[str, typer.Option(envvar="LOA_TWILIO_ACCOUNT_SID")] = SANDBOX_SID,
    auth_token: Annotated[str, typer.Option(envvar="LOA_TWILIO_AUTH_TOKEN")] = "sandbox-token",
    callbacks: Annotated[bool, typer.Option(help="post status callbacks")] = True,
) -> None:
    """A local Twilio-compatible Messages API (the real twilio SDK talks to it over HTTP)."""
    from coordinator.sandbox.sms import run_sms_sandbox

    run_sms_sandbox("127.0.0.1", port, account_sid, auth_token, callbacks)


@sandbox_app.command("smtp")
def sandbox_smtp(
    port: Annotated[int, typer.Option()] = 8025,
    maildir: Annotated[Path | None, typer.Option(help="where received mail is kept")] = None,
) -> None:
    """A local SMTP server that keeps what it receives (see `loa outbox`)."""
    from coordinator.sandbox.smtp import run_smtp_sandbox

    run_smtp_sandbox("127.0.0.1", port, maildir or load_settings().data_dir / "mail")


@app.command()
def outbox(as_json: JsonOpt = False) -> None:
    """The dev outbox: what the local SMS and SMTP sandboxes received."""
    import httpx

    from coordinator.sandbox.smtp import read_outbox

    settings = _settings()
    sms: list[dict[str, Any]] = []
    if settings.twilio_base_url:
        try:
            sms = httpx.get(f"{settings.twilio_base_url}/_sandbox/messages", timeout=5).json()
        except httpx.HTTPError as exc:
            err.print(f"SMS sandbox not reachable at {settings.twilio_base_url}: {exc}")
    emails = read_outbox(settings.data_dir / "mail")
    if as_json:
        _print_json({"sms": sms, "email": emails})
        return
    table = Table("channel", "to", "status", "text / subject")
    for m in sms:
        table.add_row("sms", m["to"], m["status"], m["body"])
    for e in emails:
        table.add_row("email", e["to"], "received", e["subject"])
    out.print(table)


def main() -> None:
    """Entry point of the `loa` command."""
    app()


if __name__ == "__main__":
    main()
