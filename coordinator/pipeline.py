"""The handler of each topic: decode, call the domain function, send what follows.

Kept apart from faust (``coordinator.app`` wires these to agents) so that the
handlers read as the data flow: report -> incident -> plan -> decision -> publication.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from channels.base import Channel
from coordinator import observability as obs
from coordinator import outbox, topics
from coordinator.approvals.decisions import apply_decision, decision_message_id
from coordinator.approvals.escalate import (
    fire_deadline,
    fire_hold_alert,
    fire_reminder,
    followup_messages,
    overdue,
    prompt_message_id,
)
from coordinator.approvals.inbox import deliver_to_inbox
from coordinator.approvals.prompt_messages import prompt_delivery
from coordinator.approvals.prompts import prompts_for
from coordinator.at_once import AtOnce
from coordinator.decoding import decode, decode_approval_event, decode_incident_event
from coordinator.dispatch.batches import deliver_batch
from coordinator.dispatch.deliveries import HELD, deliver, lane_of, queue_keep_delivery
from coordinator.dispatch.fanout import batch_lane, fan_out
from coordinator.dispatch.outcome_writes import OutcomeWrites
from coordinator.dispatch.reach import ReachInputs, record_with_reach
from coordinator.dispatch.recovery import Recovered, recover
from coordinator.dispatch.stopping import Stopping
from coordinator.errors import BadEvent
from coordinator.escalation.policy import Timer, level_timers
from coordinator.events import (
    ApprovalPrompt,
    ApprovalRequest,
    Decision,
    DeliveryBatch,
    DeliveryRequest,
    Draft,
    IncidentClosed,
    IncidentMerged,
    IncidentOpened,
    RedraftRequested,
    Report,
    ReportAttached,
    Statement,
    utcnow,
)
from coordinator.incidents.actions import close_incident, merge_incident, redraft
from coordinator.incidents.intake import (
    OpenIncidents,
    TakenIn,
    opened_message_id,
    take_in_report,
)
from coordinator.incidents.surge import detect, tell_duty_officers
from coordinator.model.approval import ApprovalRecord
from coordinator.plan.planner import plan_incident
from coordinator.reports.filing import forget_refused, report_problems
from coordinator.runtime import Runtime
from coordinator.state import Pipeline as RedisPipeline
from coordinator.statements.approved import statement_message_id
from coordinator.statements.publication import approved_statement, publish_statement

Send = Callable[[topics.TopicSpec, str, bytes], Awaitable[None]]
HAND_ON_S = 2.0  # at the stop, for a batch left unfinished to go back on its topic
log = obs.get_logger("pipeline")


class Pipeline:
    """One handler per consumed topic; each may run twice on the same event without effect."""

    def __init__(self, rt: Runtime, channels: dict[str, Channel], send: Send,
                 schedule: Callable[[Timer], None],
                 bulk_channels: dict[str, Channel] | None = None) -> None:
        self.rt = rt
        self.channels = channels
        self.bulk_channels = channels if bulk_channels is None else bulk_channels
        self.send = send
        self.schedule = schedule
        self.drainer = outbox.Drainer(rt.redis, rt.keys, send, rt.settings.resend_kept_after_s)
        self.stopping = Stopping()  # begun by the worker's stop: batches hand nothing more over
        self.outcome_writes = OutcomeWrites(rt)  # its batches' outcomes, written together
        self.open_incidents = OpenIncidents()  # where reports were seen going, to read first
        # Plans, prompts, single deliveries and a fan-out's first batches are done at once,
        # beside their maker.
        self.at_once = AtOnce(send, (topics.INCIDENT_EVENTS, topics.APPROVAL_EVENTS,
                                     topics.DELIVERIES_SMS, topics.DELIVERIES_EMAIL,
                                     topics.DISPATCH_SMS, topics.DISPATCH_EMAIL),
                              lambda kept: outbox.note_sent(rt.redis, rt.keys, kept),
                              hand_on=(topics.DISPATCH_SMS, topics.DISPATCH_EMAIL))

    def handlers(self) -> dict[topics.TopicSpec, Callable[[bytes], Awaitable[None]]]:
        """Which handler consumes which topic."""
        return {topics.REPORTS: self.intake, topics.INCIDENT_EVENTS: self.plan,
                topics.APPROVAL_EVENTS: self.prompt, topics.DECISIONS: self.decide,
                topics.STATEMENTS: self.publish, topics.DELIVERIES_SMS: self.deliver,
                topics.DELIVERIES_EMAIL: self.deliver, topics.DISPATCH_SMS: self.deliver_batch,
                topics.DISPATCH_EMAIL: self.deliver_batch}

    async def intake(self, value: bytes) -> None:
        """A report joins or opens an incident."""
        report = decode(Report, value)
        problems = report_problems(report, self.rt.city)
        if problems:  # for good: once dead-lettered, no longer kept for resending
            refused = BadEvent("; ".join(f"{field}: {why}" for field, why in problems))
            refused.after_dead_letter = lambda: forget_refused(self.rt.redis, self.rt.keys,
                                                               report.id)
            raise refused
        settings = self.rt.settings
        path = self.rt.city.ancestors(report.area)
        taken = await take_in_report(self.rt.redis, self.rt.keys, report,
                                     settings.correlation_window_s, settings.claim_similarity,
                                     path, settings.surge_window_s, self.open_incidents,
                                     self.rt.city.ancestors)
        obs.REPORTS_TAKEN_IN.labels("new" if taken.first_time else "replay").inc()
        if taken.first_time and taken.opened:
            obs.INCIDENTS_OPENED.labels(str(report.exercise).lower()).inc()
            obs.STAGE_LATENCY.labels("report_to_incident").observe(since(report.received_at))
        log.info("report taken in", report=report.id, incident_id=taken.incident_id,
                 opened=taken.opened, first_time=taken.first_time)
        if taken.opened:
            # Planned at once, beside this handler: no hop through `incident-events`
            # between a report and its approval request. Kept in Redis with the intake
            # (outbox); planned again on a replay too (the planner is idempotent).
            event = taken.opened_event(report)
            await self.at_once.start(self._plan_opened(event), topics.INCIDENT_EVENTS,
                                     taken.incident_id, event.to_bytes(),
                                     opened_message_id(taken.incident_id))
        if taken.first_time and not report.exercise:
            await self._surge(report, path, taken)

    async def _surge(self, report: Report, path: list[str], taken: TakenIn) -> None:
        """Raise the surge this report completes, if any, and tell the duty officers."""
        rt = self.rt
        surge = await detect(rt.redis, rt.keys, rt.city, report.kind, path, report.received_at,
                             rt.settings.surge_window_s, rt.settings.surge_threshold,
                             taken.incident_id, taken.surge_seen)
        if surge is not None:
            told = await tell_duty_officers(rt.city, surge, self.send)
            log.warning("surge", surge=surge.id, count=surge.count,
                        incident_id=taken.incident_id, duty_officers_told=told)

    async def plan(self, value: bytes) -> None:
        """An opened incident gets its playbook, draft and approval request (one its intake
        did not finish planning); a duty officer's action makes a new draft version or
        closes the incident."""
        event = decode_incident_event(value)
        if isinstance(event, ReportAttached):  # from before intake stopped sending these
            log.info("report attached", incident_id=event.incident_id, report=event.report.id)
            return
        if isinstance(event, RedraftRequested | IncidentClosed | IncidentMerged):
            await self.steer(event)
            return
        await self._plan_opened(event)

    async def _plan_opened(self, event: IncidentOpened) -> None:
        opened = opened_message_id(event.incident_id)
        if not await self._plan(event, opened):
            await outbox.done(self.rt.redis, self.rt.keys, [opened])

    async def _plan(self, event: IncidentOpened, carried: str) -> bool:
        """Plan, then ask; True when the kept message `carried` (the opened incident) was
        forgotten with its request's prompts kept."""
        result = await plan_incident(self.rt, event.incident_id, utcnow())
        log.info("incident planned", incident_id=event.incident_id, playbook=result.playbook_id,
                 approval=result.request.id if result.request else None,
                 first_time=result.first_time)
        if result.request is None:
            return False
        if result.first_time:
            obs.APPROVALS_REQUESTED.inc()
            obs.STAGE_LATENCY.labels("report_to_approval_request").observe(
                since(event.report.received_at))
        return await self._ask(result.request, result.reach, result.draft, result.record,
                               carried)

    async def steer(self, event: RedraftRequested | IncidentClosed | IncidentMerged) -> None:
        """A duty officer's action on an incident (from the console or the CLI)."""
        if isinstance(event, IncidentClosed):
            outcome = await close_incident(self.rt, event, utcnow())
        elif isinstance(event, IncidentMerged):
            outcome = await merge_incident(self.rt, event, utcnow())
        else:
            outcome = await redraft(self.rt, event, utcnow())
        log.info("incident action", incident_id=event.incident_id, action=event.type,
                 accepted=outcome.accepted, message=outcome.message)
        if outcome.request is not None:
            obs.APPROVALS_REQUESTED.inc()
            await self._ask(outcome.request)

    async def _ask(self, request: ApprovalRequest, reach: ReachInputs | None = None,
                   draft: Draft | None = None, row: dict[str, str] | None = None,
                   carried: str | None = None) -> bool:
        """Arm the request's timers and prompt its first holders. Also on a replay: timers
        and prompts have deterministic ids, so this re-arms what a crash between the Redis
        write and here would have lost, and nothing more. (The request itself is not put on
        `approval-events`: nothing consumed it there; the audit stream records it.) `reach`,
        `draft` and `row` (the request's record with its reach): what the planner just
        wrote, not read back. True when the kept message `carried` was forgotten with the
        prompts kept (see :meth:`_send_prompts`)."""
        # What the draft would reach and cost, on the request before anyone is asked.
        if row is None:
            row = await record_with_reach(self.rt.redis, self.rt.keys, self.rt.city,
                                          request.id, request.incident_id, request.draft_id,
                                          reach)
        record = ApprovalRecord.from_hash(row)
        for timer in level_timers(record):
            self.schedule(timer)
        if record.status != "pending" or record.phase != "level":
            return False
        prompts = prompts_for("request", record, record.holders, self.rt.city.people,
                              utcnow(), self.rt.settings.timezone)
        await self._send_prompts(prompts, draft if draft and draft.id == request.draft_id
                                 else None, carried)
        return carried is not None

    async def prompt(self, value: bytes) -> None:
        """A prompt on the topic (an escalation's, or one its planner did not finish)."""
        event = decode_approval_event(value)
        if isinstance(event, ApprovalPrompt):
            await self._prompt(event)

    async def _prompt(self, event: ApprovalPrompt, draft: Draft | None = None) -> None:
        """A prompt reaches its person: always in the web inbox (`loa inbox`), and on their
        preferred channel when that is SMS or email. That delivery is kept in Redis (as the
        prompt is forgotten, with the inbox's write: one of them always is), then handed
        over at once, beside this handler (its retries never hold up the next prompt);
        should that fail, its topic's `deliver` takes it."""
        request = await prompt_delivery(self.rt, event, draft)

        def keep(pipe: RedisPipeline) -> None:
            if request is not None:
                queue_keep_delivery(pipe, self.rt.keys, request)
            outbox.queue_done(pipe, self.rt.keys, [prompt_message_id(event.id)])

        delivered = await deliver_to_inbox(self.rt, event, keep)
        log.info("prompt delivered", incident_id=event.incident_id, prompt=event.id,
                 person=event.person_id, kind=event.kind, first_time=delivered)
        if request is not None:
            await self.at_once.start(self._deliver(request, on_topic=False),
                                     lane_of(request), request.id, request.to_bytes())

    async def deliver(self, value: bytes) -> None:
        """An SMS or email goes to its provider, with retries, once."""
        await self._deliver(decode(DeliveryRequest, value))

    async def _deliver(self, request: DeliveryRequest, on_topic: bool = True) -> None:
        result = await deliver(self.rt, self.channels, request, utcnow(), self.stopping,
                               on_topic)
        log.info("delivery", delivery=request.id, channel=request.channel, status=result.status,
                 detail=result.detail, incident_id=request.incident_id)
        if result.status == HELD:
            await self._put_back(lane_of(request), request.id, request.to_bytes())

    async def deliver_batch(self, value: bytes) -> None:
        """A batch of a statement's deliveries goes to its channel, each one once."""
        await self._deliver_batch(decode(DeliveryBatch, value))

    async def _start_batch(self, statement: Statement, batch: DeliveryBatch,
                           numbers: list[int]) -> None:
        """A fan-out's first batches are handed over at once, beside the publication: a
        statement's first messages do not wait for a hop through `dispatch.*`. (The batch
        is in the dispatch ledger: one cut off is finished by the recovery round.)"""
        spec, key = batch_lane(batch)
        await self.at_once.start(self._deliver_batch(batch, (statement, numbers)), spec, key,
                                 batch.to_bytes())

    async def _deliver_batch(self, batch: DeliveryBatch,
                             cut: tuple[Statement, list[int]] | None = None) -> None:
        report = await deliver_batch(self.rt, self.bulk_channels, batch, utcnow(), cut,
                                     self.stopping, self.outcome_writes)
        log.info("delivery batch", statement=batch.statement_id, channel=batch.channel,
                 batch=batch.number, outcomes=report.counts, done=report.done,
                 given_back=report.left)
        if not report.done and (report.held or self.stopping.begun):
            await self._put_back(*batch_lane(batch), batch.to_bytes())

    async def _put_back(self, spec: topics.TopicSpec, key: str, value: bytes) -> None:
        """A batch or delivery cut off by the stop or a rebalance goes back on its topic;
        should that fail, the recovery round finds it in Redis once it has stalled."""
        try:
            await asyncio.wait_for(self.send(spec, key, value), HAND_ON_S)
        except Exception as exc:
            log.warning("not put back on its topic at the stop; the recovery round resumes "
                        "it", topic=spec.name, key=key, error=repr(exc))

    async def recover(self) -> Recovered:
        """Finish the fan-outs and single deliveries the broker lost (``dispatch.recovery``)."""
        settings = self.rt.settings
        return await recover(self.rt, self.send, settings.recover_stalled_after_s,
                             settings.resend_kept_after_s)

    async def on_timer(self, kind: str, approval_id: str, number: int, fraction: float) -> None:
        """A deadline, reminder or hold alert came due (from APScheduler or the sweep)."""
        now = utcnow()
        if kind == "deadline":
            fired = await fire_deadline(self.rt, approval_id, number, now)
        elif kind == "hold":
            fired = await fire_hold_alert(self.rt, approval_id, number, now)
        else:
            fired = await fire_reminder(self.rt, approval_id, number, fraction, now)
        if fired.action.startswith("ignored"):
            return
        if fired.lateness_s is not None:
            obs.ESCALATION_LATENESS.observe(fired.lateness_s)
        log.info("timer fired", approval=approval_id, kind=kind, number=number,
                 action=fired.action, lateness_s=fired.lateness_s)
        for timer in fired.timers:
            self.schedule(timer)
        # Kept in Redis with the transition (outbox): their consumers finish them.
        for topic, key, message in followup_messages(fired).values():
            await self.send(topics.spec_named(topic), key, message)

    async def drain_followups(self) -> int:
        """Send again the kept messages no consumer has finished (idempotent downstream);
        all of them at once since the worker started or was last given new partitions."""
        return await self.drainer.round()

    async def sweep(self) -> int:
        """Fire every timer overdue by more than a second (a lost job's safety net). One
        that fails is logged and passed over, so those due after it are still fired: the
        oldest come first, and one that always fails (an unreadable record) had stopped
        the net for every request behind it."""
        due = await overdue(self.rt, utcnow(), grace_s=1.0)
        for approval_id, number, kind in due:
            try:
                await self.on_timer(kind, approval_id, number, 0.0)
            except Exception as exc:
                log.error("overdue timer failed; the next sweep tries it again",
                          approval=approval_id, kind=kind, error=repr(exc))
        return len(due)

    async def _send_prompts(self, prompts: list[ApprovalPrompt], draft: Draft | None = None,
                            carried: str | None = None) -> None:
        """Each prompt kept until it is handed on (a cut-off one is sent to `prompt` by the
        outbox's drain), then handled at once, beside the planner: no hop through
        `approval-events` between an approval request and its approvers' phones. The kept
        message `carried`, whose work the prompts carry on, is forgotten with their keeping."""
        kept = {prompt_message_id(p.id): (topics.APPROVAL_EVENTS.name, p.incident_id,
                                          p.to_bytes()) for p in prompts}
        await outbox.keep(self.rt.redis, self.rt.keys, kept, [carried] if carried else [])
        for p in prompts:
            message_id = prompt_message_id(p.id)
            await self.at_once.start(self._prompt(p, draft), topics.APPROVAL_EVENTS,
                                     p.incident_id, kept[message_id][2], message_id)

    async def decide(self, value: bytes) -> None:
        """An approver's decision: approve -> statement, reject -> back to the duty officer."""
        decision = decode(Decision, value)
        outcome = await apply_decision(self.rt, decision, utcnow())
        obs.DECISIONS.labels("accepted" if outcome.accepted else "refused").inc()
        log.info("decision applied", approval=decision.approval_id,
                 approver=decision.approver_id, verdict=decision.verdict,
                 accepted=outcome.accepted, message=outcome.message)
        if outcome.statement is not None:  # also kept in Redis (outbox) until published
            # Through `statements`, keyed by incident, not published here (decisions are
            # keyed by approval): an incident's statements are published and cut one after
            # the other, so an update reaches everyone its predecessor reached.
            await self.send(topics.STATEMENTS, outcome.statement.incident_id,
                            outcome.statement.to_bytes())
        await outbox.done(self.rt.redis, self.rt.keys, [decision_message_id(decision.id)])

    async def publish(self, value: bytes) -> None:
        """An approved statement goes out: on the public pages, then on its channels."""
        statement = await approved_statement(self.rt, decode(Statement, value))
        if await publish_statement(self.rt, statement, utcnow()):
            obs.STATEMENTS_PUBLISHED.labels(str(statement.exercise).lower()).inc()
            obs.STAGE_LATENCY.labels("approval_to_publication").observe(
                since(statement.approved_at))
        queued = await fan_out(self.rt, statement, self.send,
                               lambda batch, numbers: self._start_batch(statement, batch, numbers))
        if queued is None:  # kept: the outbox's drain brings it back once the lock is free
            log.warning("fan-out held by another cutter (a worker that has not started it,"
                        " or this one, still cutting it)", statement=statement.id)
            return
        # From here on the dispatch ledger is the fan-out's record (dispatch.recovery).
        await outbox.done(self.rt.redis, self.rt.keys, [statement_message_id(statement.id)])
        log.info("statement published", incident_id=statement.incident_id,
                 statement=statement.id, deliveries_queued=queued)


def since(moment: datetime) -> float:
    """Seconds from `moment` until now (never negative)."""
    return max(0.0, time.time() - moment.timestamp())
