"""Promised updates: "next update by 15:30", kept, reminded of, and flagged when broken.

When a statement is published, its playbook's `follow_ups` promise the next one: after
the k-th publication, `follow_ups[k-1].after` from now, or, past the list, the last
entry's `every` (no promise when there is neither); an all-clear ends the promise. A duty
officer may set or clear it by hand (`loa incident promise`). The promise is kept on the
incident (`next_update_by`), on its latest statement (the public pages and CAP's
`<expires>` show it), and in the `promises` index the worker sweeps: a reminder to the
duty officers `LOA_PROMISE_REMIND_BEFORE_S` ahead (`due`), to them and the duty
supervisors `LOA_PROMISE_ESCALATE_BEFORE_S` ahead, when it is about to be broken
(`escalated`), and to both once it is (`broken`). Each stage is recorded once per promise
(a field on the incident names the promise it was for); a stage reached late skips the
earlier ones.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from coordinator.city import City
from coordinator.dispatch.deliveries import Send, keep_deliveries, send_kept_deliveries
from coordinator.dispatch.duty_alerts import duty_officer_alerts, supervisor_alerts
from coordinator.events import AuditEvent, DeliveryRequest
from coordinator.keys import Keys
from coordinator.playbooks.models import FollowUp
from coordinator.playbooks.render import exercise_mark
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, Redis, queue_audit, transact
from coordinator.statements.prepared_update import follow_up_for, prepare_update
from coordinator.statements.public_events import queue_public_event


def promised_after(follow_ups: list[FollowUp], publication: int) -> float | None:
    """Seconds to the update promised after the `publication`-th statement (1 = the first);
    None for no promise. Pure."""
    up = follow_up_for(follow_ups, publication)
    if up is None:
        return None
    return up.after if publication <= len(follow_ups) else up.every


def queue_promise(pipe: Pipeline, keys: Keys, incident_id: str, statement_id: str | None,
                  due: datetime | None) -> None:
    """Inside MULTI: the incident's promise is now `due` (None: no promise), shown on its
    latest statement `statement_id`."""
    ikey = keys.incident(incident_id)
    pipe.hdel(ikey, *STAGE_FIELDS.values())
    pipe.delete(keys.prepared_update(incident_id))  # drafted for the promise that was
    if due is None:
        pipe.hdel(ikey, "next_update_by")
        pipe.zrem(keys.promises(), incident_id)
        if statement_id:
            pipe.hdel(keys.statement(statement_id), "next_update_by")
    else:
        pipe.hset(ikey, "next_update_by", due.isoformat())
        pipe.zadd(keys.promises(), {incident_id: due.timestamp()})
        if statement_id:
            pipe.hset(keys.statement(statement_id), "next_update_by", due.isoformat())
    if statement_id:  # its public card says (or stops saying) when the next update is due
        queue_public_event(pipe, keys, "published", statement_id)


async def set_promise(redis: Redis, keys: Keys, incident_id: str, due: datetime | None,
                      actor: str, via: str, now: datetime) -> str:
    """A duty officer promises the next update by `due` (or withdraws the promise); what
    happened, in words. Raises LookupError for an unknown incident."""
    ikey = keys.incident(incident_id)

    async def body(pipe: Pipeline) -> str:
        row = await pipe.hgetall(ikey)
        if not row:
            raise LookupError(f"no incident {incident_id}")
        published = json.loads(row.get("published") or "[]")
        pipe.multi()
        queue_promise(pipe, keys, incident_id, published[-1] if published else None, due)
        queue_audit(pipe, keys, AuditEvent(
            at=now, actor=actor, action="promise.set" if due else "promise.withdrawn",
            interface=via, incident_id=incident_id, subject=incident_id,  # type: ignore[arg-type]
            detail={"next_update_by": due.isoformat() if due else None}))
        return (f"{incident_id}: next update promised by {due.isoformat()}" if due
                else f"{incident_id}: no update promised")

    result: str = await transact(redis, [ikey], body)
    return result


STAGE_FIELDS = {"due": "promise_reminded", "escalated": "promise_escalated",
                "broken": "promise_broken"}


def stage(due: datetime, now: datetime, escalate_before_s: float) -> str:
    """Where a promise stands at `now`: `due` (coming), `escalated` (about to be broken)
    or `broken`. Pure."""
    if now >= due:
        return "broken"
    return "escalated" if now >= due - timedelta(seconds=escalate_before_s) else "due"


def promise_text(incident_id: str, title: str, due: datetime, broken: bool, tz: str,
                 marks: tuple[str, str] = ("", ""), prepared: bool = False) -> str:
    """The duty officers' message, in Vietnamese then English; a drill's starts each half
    with its `marks` (the staff languages' drill marks), and it says when Loa has drafted
    the update ahead."""
    at = due.astimezone(ZoneInfo(tz)).strftime("%H:%M %d/%m")
    vi, en = (f"{m} " if m else "" for m in marks)
    ready_vi, ready_en = ((" Bản cập nhật đã soạn sẵn trên console.",
                           " A draft update is ready in the console.") if prepared else ("", ""))
    if broken:
        return (f"{vi}Loa: QUÁ HẠN cập nhật đã hứa cho {incident_id} ({title}), hạn {at}."
                f"{ready_vi} / {en}Promised update for {incident_id} ({title}) is overdue: it "
                f"was due {at}.{ready_en}")
    return (f"{vi}Loa: sắp đến hạn cập nhật đã hứa cho {incident_id} ({title}): {at}."
            f"{ready_vi} / {en}Promised update for {incident_id} ({title}) is due at {at}."
            f"{ready_en}")


def promise_alerts(city: City, incident_id: str, title: str, due: datetime, where: str,
                   tz: str, exercise: bool = False, prepared: bool = False
                   ) -> list[DeliveryRequest]:
    """Who is told that the promise reached stage `where`: the duty officers, and from
    `escalated` on their supervisors too. Pure."""
    alert_id = f"promise-{incident_id}-{int(due.timestamp())}-{where}"
    marks = (tuple(exercise_mark(lang, city.catalogs) for lang in city.languages.staff_pair())
             if exercise else ("", ""))
    text = promise_text(incident_id, title, due, where == "broken", tz, marks,  # type: ignore[arg-type]
                        prepared)
    return [*duty_officer_alerts(city, alert_id, text, incident_id),
            *(supervisor_alerts(city, alert_id, text, incident_id) if where != "due" else [])]


async def sweep_promises(rt: Runtime, send: Send, now: datetime) -> int:
    """Remind of promises coming due, escalate those about to be broken, flag those broken,
    once each, drafting each promised update ahead; how many stages were reached."""
    settings = rt.settings
    ahead = max(settings.promise_remind_before_s, settings.promise_escalate_before_s)
    horizon = (now + timedelta(seconds=ahead)).timestamp()
    due_ids = await rt.redis.zrangebyscore(rt.keys.promises(), "-inf", horizon, start=0,
                                           num=200)
    done = 0
    for incident_id in due_ids:
        alerts = await _mind(rt, incident_id, now)
        if alerts is None:
            continue
        await send_kept_deliveries(alerts, send)
        done += 1
    return done


async def _mind(rt: Runtime, incident_id: str, now: datetime) -> list[DeliveryRequest] | None:
    """Record the stage the promise has reached, once, with the messages that tell of it
    (kept in the same transaction) and, the first time, the update drafted ahead: those
    messages, or None when there is nothing (new) to say."""
    keys, tz = rt.keys, rt.settings.timezone
    ikey, prepared_key = keys.incident(incident_id), keys.prepared_update(incident_id)
    supervisors = sorted(rt.city.duty_supervisors)

    async def body(pipe: Pipeline) -> list[DeliveryRequest] | None:
        row = await pipe.hgetall(ikey)
        due_text = row.get("next_update_by")
        if not due_text or row.get("status") == "closed":
            pipe.multi()
            pipe.zrem(keys.promises(), incident_id)
            return None
        due = datetime.fromisoformat(due_text)
        where = stage(due, now, rt.settings.promise_escalate_before_s)
        if row.get(STAGE_FIELDS[where]) == due_text:
            pipe.multi()
            return None
        ready = bool(await pipe.exists(prepared_key))
        # Not while a new version waits for approval: the update is on its way already.
        busy = row.get("status") in ("awaiting_approval", "approved")
        drafted = None if ready or busy else prepare_update(
            rt.playbooks.get(row.get("playbook", "")), row, rt.city, now, tz,
            rt.settings.web_url())
        drill = row.get("exercise") == "1"  # a drill's promise is a drill's too
        alerts = promise_alerts(rt.city, incident_id, row.get("title", ""), due, where, tz,
                                drill, prepared=ready or drafted is not None)
        pipe.multi()
        pipe.hset(ikey, STAGE_FIELDS[where], due_text)
        if where == "broken":
            pipe.zrem(keys.promises(), incident_id)
        if drafted:
            pipe.set(prepared_key, json.dumps(drafted, ensure_ascii=False))
        keep_deliveries(pipe, keys, alerts)
        queue_audit(pipe, keys, AuditEvent(
            at=now, actor="promise keeper", action=f"promise.{where}", interface="system",
            incident_id=incident_id, subject=incident_id,
            detail={"next_update_by": due_text, **({"exercise": True} if drill else {}),
                    **({"update_drafted": True} if drafted else {}),
                    **({"supervisors": supervisors} if where != "due" else {})}))
        return alerts

    result: list[DeliveryRequest] | None = await transact(rt.redis, [ikey, prepared_key], body)
    return result
