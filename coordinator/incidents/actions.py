"""What a duty officer does to an incident after it opened: a new draft version (their own
wording, an update, a correction, an all-clear, or the playbook's after re-selection), and
closing it. Each is one compare-and-set keyed by the action's id, so a replay does nothing.

A new version supersedes a request still pending (it can no longer be decided) and goes
back for approval. Once a statement is public, later versions are CAP `Update`s (an
all-clear a `Cancel`) that reference every statement published before them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from channels.segments import segment_count
from coordinator import queries
from coordinator.errors import TemplateRenderError
from coordinator.events import (
    ApprovalRequest,
    AuditEvent,
    Draft,
    IncidentClosed,
    IncidentMerged,
    RedraftRequested,
    RenderedText,
)
from coordinator.model.incident import (
    DRAFTABLE,
    OPEN,
    TRANSLATABLE,
    Incident,
    IncidentStatus,
    closed,
    draft_version,
    ids_for,
    merged,
)
from coordinator.plan.planner import choose_playbook, queue_version
from coordinator.playbooks.render import (
    facts_of,
    marked_as_exercise,
    render_draft,
    with_change_line,
)
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, queue_audit, transact
from coordinator.statements.promises import queue_promise


@dataclass(frozen=True)
class ActionOutcome:
    """What became of a duty officer's action; the web shows `message`."""

    accepted: bool
    message: str
    request: ApprovalRequest | None = None

    def to_json(self) -> str:
        """Stored under the action's id."""
        return json.dumps({"accepted": self.accepted, "message": self.message,
                           "approval_id": self.request.id if self.request else None})


def message_type(purpose: str, published: list[str]) -> str:
    """CAP msgType of a new version: nothing public yet -> Alert; all-clear -> Cancel."""
    if not published:
        return "Alert"
    return "Cancel" if purpose == "all_clear" else "Update"


def with_segments(texts: list[RenderedText], budgets: dict[str, int | None]) -> list[RenderedText]:
    """Typed texts with their SMS segment counts and the playbook's budget filled in (for a
    language the playbook has no SMS in, a translator's, its largest budget)."""
    largest = max((b for b in budgets.values() if b), default=None)
    return [t.model_copy(update={"segments": segment_count(t.body),
                                 "segment_budget": budgets.get(t.language) or largest})
            if t.channel == "sms" else t for t in texts]


def refusal(event: RedraftRequested, incident: dict[str, str], published: list[str]
            ) -> str | None:
    """Why a new version may not be made, or None. Pure."""
    status = incident.get("status")
    if status not in OPEN:
        return f"{event.incident_id} is {status}; reopen it with a new report"
    if status not in DRAFTABLE:  # approved, not yet public: wait for it
        return ("a statement was just approved and is being published; "
                "make the new version once it is public")
    if event.note == "translation" and status not in TRANSLATABLE:  # rejected meanwhile
        return (f"{event.incident_id} is {status}: only a draft awaiting a decision is "
                "translated")
    if event.purpose == "all_clear" and not published:
        return "nothing has been published to give the all-clear for; close the incident"
    if event.purpose != "reselect" and not event.texts:
        return "a new version needs its text"
    return None


async def redraft(rt: Runtime, event: RedraftRequested, now: datetime) -> ActionOutcome:
    """Make the next draft version once and request its approval."""

    async def decide(pipe: Pipeline, incident: dict[str, str]) -> ActionOutcome:
        published = json.loads(incident.get("published", "[]"))
        why = refusal(event, incident, published)
        pending = await _pending_approval(pipe, rt, incident)
        if why:
            pipe.multi()
            outcome = ActionOutcome(False, f"refused: {why}")
        else:
            built = await _next_draft(pipe, rt, event, incident, published, now)
            pipe.multi()
            outcome = _queue(pipe, rt, event, incident, pending, built, now) if isinstance(
                built, tuple) else ActionOutcome(False, f"refused: {built}")
        return outcome

    return await _once(rt, event.id, event.incident_id, decide)


async def _next_draft(pipe: Pipeline, rt: Runtime, event: RedraftRequested,
                      incident: dict[str, str], published: list[str], now: datetime
                      ) -> tuple[Draft, str] | str:
    """(draft, why this playbook) or why there is none."""
    version = draft_version(incident.get("draft_id", "")) + 1
    draft_id, _, statement_id = ids_for(event.incident_id, version)
    known = facts_of(incident)
    facts = dataclasses.replace(known, link=f"{rt.settings.web_url()}/s/{statement_id}",
                                fact=event.fact or known.fact,
                                fact_source=event.fact_source or known.fact_source)
    if event.purpose == "reselect":
        selection = choose_playbook(rt, facts, event.playbook_id)
        playbook, reason = rt.playbooks[selection.playbook_id], selection.reason
        try:
            texts = render_draft(playbook, facts, rt.city, now, rt.settings.timezone)
        except TemplateRenderError as exc:
            return f"the playbook {playbook.id} could not render: {exc}"
    else:
        if incident.get("playbook") not in rt.playbooks:
            return "the incident has no playbook yet"
        playbook = rt.playbooks[incident["playbook"]]
        budgets = {lang: getattr(playbook.template(lang, "sms"), "segment_budget", None)
                   for lang in playbook.languages} if "sms" in playbook.channels else {}
        texts = with_change_line(with_segments(event.texts or [], budgets), event.purpose,
                                 event.change, rt.city.catalogs)
        if facts.exercise:  # an edited text of a drill still says it is one
            texts = marked_as_exercise(texts, rt.city.catalogs)
        reason = f"{event.purpose} by {event.actor}"
    spreading = (await queries.spreading_of(rt.redis, rt.keys, event.incident_id)
                 if incident.get("claim") else [])
    return Draft(id=draft_id, incident_id=event.incident_id, playbook_id=playbook.id,
                 version=version, texts=texts, rendered_at=now,
                 msg_type=message_type(event.purpose, published),  # type: ignore[arg-type]
                 references=published, purpose=event.purpose, author=event.actor,
                 note=event.note, fact=facts.fact, fact_source=facts.fact_source,
                 spreading=spreading), reason


def _queue(pipe: Pipeline, rt: Runtime, event: RedraftRequested, incident: dict[str, str],
           pending: str | None, built: tuple[Draft, str], now: datetime) -> ActionOutcome:
    draft, reason = built
    _supersede(pipe, rt, pending, draft.id, "superseded", now)
    pipe.delete(rt.keys.prepared_update(event.incident_id))  # this version takes its place
    stated = {k: v for k, v in (("fact", event.fact), ("fact_source", event.fact_source)) if v}
    if stated:
        pipe.hset(rt.keys.incident(event.incident_id), mapping=stated)
    _audit(pipe, rt, event.actor, event.via, event.incident_id, f"draft.{event.purpose}",
           draft.id, {"note": event.note, "playbook": draft.playbook_id, **stated}, now)
    request = queue_version(pipe, rt, incident, rt.playbooks[draft.playbook_id], draft, reason,
                            now)
    where = (f"; approval {request.id} requested" if request
             else "; it waits for a duty officer (the playbook asks no approver)")
    return ActionOutcome(True, f"draft version {draft.version} made{where}", request)


async def _pending_approval(pipe: Pipeline, rt: Runtime, incident: dict[str, str]
                            ) -> str | None:
    """The incident's approval request if it is still pending, read from the request's own
    record (WATCHed, so a decision racing this action makes it start over)."""
    approval_id = incident.get("approval_id")
    if not approval_id:
        return None
    await pipe.watch(rt.keys.approval(approval_id))
    status = await pipe.hget(rt.keys.approval(approval_id), "status")
    return approval_id if status == "pending" else None


def _supersede(pipe: Pipeline, rt: Runtime, approval_id: str | None, by: str, status: str,
               now: datetime) -> None:
    """Inside MULTI: a pending request can no longer be decided (its timers see the status
    and stop)."""
    if approval_id:
        pipe.hset(rt.keys.approval(approval_id), mapping={
            "status": status, "decided_by": by, "decided_at": now.isoformat()})
        pipe.zrem(rt.keys.approvals_pending(), approval_id)


async def _once(rt: Runtime, action_id: str, incident_id: str,
                decide: Callable[[Pipeline, dict[str, str]], Awaitable[ActionOutcome]]
                ) -> ActionOutcome:
    """Run an action on an incident as one compare-and-set, once: `decide` reads (WATCHing
    what else it depends on), calls ``pipe.multi()`` and queues its writes; its outcome is
    stored under the action id, so a replay returns it and changes nothing."""
    done_key = rt.keys.decision(action_id)

    async def body(pipe: Pipeline) -> ActionOutcome:
        incident, earlier = await _load(pipe, rt, action_id, incident_id)
        if earlier is not None:
            return earlier
        outcome = await decide(pipe, incident)
        pipe.set(done_key, outcome.to_json())
        return outcome

    return await transact(rt.redis, [rt.keys.incident(incident_id), done_key], body)


async def _load(pipe: Pipeline, rt: Runtime, action_id: str, incident_id: str
                ) -> tuple[dict[str, str], ActionOutcome | None]:
    """(the incident, None) to act on; or the outcome already settled: this action's
    first one on a replay, or a refusal for an unknown incident."""
    seen = await pipe.get(rt.keys.decision(action_id))
    incident: dict[str, str] = await pipe.hgetall(rt.keys.incident(incident_id))
    if seen:
        return incident, await _replayed(pipe, rt, json.loads(seen))
    if not incident:
        return incident, ActionOutcome(False, f"no incident {incident_id}")
    return incident, None


async def _replayed(pipe: Pipeline, rt: Runtime, stored: dict[str, object]) -> ActionOutcome:
    """The first outcome, with its request (so a replay re-arms what a crash lost)."""
    request = None
    if stored.get("approval_id"):
        raw = await pipe.hget(rt.keys.approval(str(stored["approval_id"])), "request")
        request = ApprovalRequest.model_validate_json(raw) if raw else None
    return ActionOutcome(bool(stored["accepted"]), str(stored["message"]), request)


def _audit(pipe: Pipeline, rt: Runtime, actor: str, via: str, incident_id: str, action: str,
           subject: str, detail: dict[str, object], now: datetime) -> None:
    queue_audit(pipe, rt.keys, AuditEvent(at=now, actor=actor, action=action,
                                          interface=via,  # type: ignore[arg-type]
                                          incident_id=incident_id, subject=subject,
                                          detail=detail))


async def close_incident(rt: Runtime, event: IncidentClosed, now: datetime) -> ActionOutcome:
    """Close once: new reports of its kind and area open a new incident."""

    async def decide(pipe: Pipeline, incident: dict[str, str]) -> ActionOutcome:
        stored = Incident.from_hash(incident)
        open_key = rt.keys.open_incident(f"{stored.kind}:{stored.area}"
                                          + (":exercise" if stored.exercise else ""))
        await pipe.watch(open_key)
        current = await pipe.get(open_key)
        pending = await _pending_approval(pipe, rt, incident)
        pipe.multi()
        if stored.status == IncidentStatus.closed:
            outcome = ActionOutcome(False, f"{event.incident_id} is already closed")
        else:
            _supersede(pipe, rt, pending, f"{event.actor} (incident closed)", "withdrawn", now)
            pipe.hset(rt.keys.incident(event.incident_id),
                      mapping=closed(stored, event.reason, now))
            # A closed incident promises no more updates (its last statement says none).
            queue_promise(pipe, rt.keys, event.incident_id,
                          stored.published[-1] if stored.published else None, None)
            if current == event.incident_id:
                pipe.delete(open_key)
            _audit(pipe, rt, event.actor, event.via, event.incident_id, "incident.closed",
                   event.incident_id, {"reason": event.reason}, now)
            outcome = ActionOutcome(True, f"{event.incident_id} closed")
        return outcome

    return await _once(rt, event.id, event.incident_id, decide)


def merge_refusal(gone: Incident, into: Incident) -> str | None:
    """Why `gone` may not be merged into `into`, or None. Pure."""
    if gone.id == into.id:
        return "an incident cannot be merged into itself"
    for incident in (gone, into):
        if incident.status not in OPEN:
            return f"{incident.id} is {incident.status.value}"
    if gone.exercise != into.exercise:
        return "a drill and a real incident are kept apart"
    if gone.published:
        return (f"{gone.id} has published statements ({', '.join(gone.published)}); merge "
                f"the other way, or give {gone.id} its all-clear and close it")
    if gone.status == IncidentStatus.approved:
        return f"a statement of {gone.id} was just approved; wait until it is public"
    return None


async def merge_incident(rt: Runtime, event: IncidentMerged, now: datetime) -> ActionOutcome:
    """Merge once: the incident is closed pointing at the other; its reports, their times
    and its claims' wordings count there, so later reports like them join there too."""
    into_key = rt.keys.incident(event.into)

    async def decide(pipe: Pipeline, incident: dict[str, str]) -> ActionOutcome:
        await pipe.watch(into_key)
        target = await pipe.hgetall(into_key)
        if not target:
            pipe.multi()
            return ActionOutcome(False, f"refused: no incident {event.into}")
        gone, into = Incident.from_hash(incident), Incident.from_hash(target)
        why = merge_refusal(gone, into)
        # Where intake looks for the incident reports like gone's join (as it computes it).
        open_key = rt.keys.open_incident(f"{gone.kind}:{gone.area}"
                                          + (":exercise" if gone.exercise else ""))
        await pipe.watch(open_key)
        holder = await pipe.get(open_key)
        variants = await pipe.hgetall(rt.keys.claim_variants(gone.id))
        times = dict(await pipe.zrange(rt.keys.report_times(gone.id), 0, -1, withscores=True))
        pending = await _pending_approval(pipe, rt, incident)
        pipe.multi()
        if why:
            return ActionOutcome(False, f"refused: {why}")
        _supersede(pipe, rt, pending, f"{event.actor} (merged into {into.id})", "withdrawn",
                   now)
        pipe.hset(rt.keys.incident(gone.id), mapping=merged(gone, into, now))
        queue_promise(pipe, rt.keys, gone.id, None, None)
        if holder == gone.id:  # its kind and area's next reports join the merged incident
            pipe.set(open_key, into.id)
        pipe.srem(rt.keys.open_claims(gone.exercise), gone.id)
        if variants:  # retellings of gone's wordings find them there, claim or not
            pipe.sadd(rt.keys.open_claims(into.exercise), into.id)
        pipe.hincrby(into_key, "report_count", gone.report_count)
        pipe.hset(into_key, mapping={
            "last_report_at": max(gone.last_report_at, into.last_report_at).isoformat(),
            "updated_at": now.isoformat()})
        if variants:
            pipe.hset(rt.keys.claim_variants(into.id), mapping=variants)
        if times:
            pipe.zadd(rt.keys.report_times(into.id), times)
        detail: dict[str, object] = {"from": gone.id, "into": into.id,
                                     "reports": gone.report_count, "reason": event.reason}
        _audit(pipe, rt, event.actor, event.via, gone.id, "incident.merged", into.id, detail,
               now)
        _audit(pipe, rt, event.actor, event.via, into.id, "incident.merged_in", gone.id,
               detail, now)
        return ActionOutcome(True, f"{gone.id} merged into {into.id} "
                                   f"({gone.report_count} reports)")

    return await _once(rt, event.id, event.incident_id, decide)
