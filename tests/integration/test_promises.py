"""Promised updates on the real stack: a flood statement promises the next update as its
playbook says, the public page and CAP show it, a duty officer moves it, and the worker
reminds of it and flags it once broken; a broken promise leaves the alert in /cap.xml
until its validity ends."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import pytest

from coordinator import topics
from coordinator.events import IncidentClosed
from coordinator.feeds import local_stamp
from tests.integration.factories import approve_a_flood, produce, timeline_entries
from tests.integration.stack import Stack, wait_for
from tests.integration.webclient import WebSession

pytestmark = pytest.mark.integration


def test_a_statement_promises_its_next_update_and_a_broken_promise_is_flagged(
        stack: Stack) -> None:
    incident_id, statement_id = approve_a_flood(stack, "hn-hai-ba-trung-minh-khai",
                                                f"Ngập sâu {uuid.uuid4().hex[:6]}")
    stack.wait_for_status(incident_id, "published")
    stored = stack.redis.hgetall(stack.keys.statement(statement_id))
    promised = datetime.fromisoformat(stored["next_update_by"])
    assert promised - datetime.fromisoformat(stored["published_at"]) == timedelta(hours=2)
    assert stack.incident(incident_id)["next_update_by"] == stored["next_update_by"]
    with stack.http("") as public:
        page = public.get(f"/statements/{statement_id}", params={"lang": "en"}).text
        alert = public.get(f"/cap/{statement_id}.xml").text
        index = public.get("/cap.xml").text
    assert f'Next update by <time datetime="{stored["next_update_by"]}">' in page
    # The promise (2 h) is sooner than the alert's validity (a day): it expires after the
    # day, so a late update does not take the warning out of force.
    valid = datetime.fromisoformat(stored["published_at"]) + timedelta(days=1)
    assert re.findall(r"<expires>([^<]+)</expires>", alert) == [
        local_stamp(valid, "Asia/Ho_Chi_Minh")] * 4  # one <info> per language
    assert statement_id in index

    officer = stack.token("duty-officer", "duty_officer")
    # Within the reminder window (10 min) but not the escalation's (2 min): a reminder.
    moved = stack.cli("incident", "promise", incident_id, "--in", "5m", "--token", officer)
    assert moved.returncode == 0, moved.stderr
    assert f"{incident_id}: next update promised by" in moved.stdout
    [reminded] = wait_for(lambda: timeline_entries(stack, incident_id, "promise.due"), 10,
                          "the reminder")
    assert reminded["detail"]["update_drafted"] is True
    # Loa drafted the update from the playbook: the officer finds it on the incident page,
    # with what it must cover, and sends it for approval as an update.
    prepared = stack.cli_json("show", incident_id, *stack.as_officer())["prepared_update"]
    assert prepared["covers"] == "Update on water levels and road closures"
    session = WebSession(stack.web_url)
    password = stack.account("promise-mai", "duty_officer", "tran-thi-mai")
    session.login("promise-mai", password, stack.totp_secrets["promise-mai"])
    page_html = session.get(f"/console/incidents/{incident_id}").text
    assert 'id="prepared-update"' in page_html and prepared["covers"] in page_html
    form = {f"{'title' if k == 'title' else 'body'}:{t['channel']}:{t['language']}": t[k]
            for t in prepared["texts"] for k in ("title", "body")
            if k == "body" or t["channel"] != "sms"}
    sent = session.post_form(f"/console/incidents/{incident_id}/drafts", {
        **form, "purpose": "update", "change": "Nước đã rút ở phố Minh Khai"})
    session.close()
    assert sent.status_code == 200, sent.text
    update = stack.cli_json("show", incident_id, *stack.as_officer())
    assert update["approval_id"].endswith("-2") and "prepared_update" not in update
    assert update["status"] == "awaiting_approval"
    # About to be broken at once: escalated to the duty supervisor, then flagged as broken.
    stack.cli("incident", "promise", incident_id, "--in", "3s", "--token", officer)
    [escalated] = wait_for(lambda: timeline_entries(stack, incident_id, "promise.escalated"),
                           10, "the escalation")
    assert escalated["detail"]["supervisors"] == ["ha-thi-phuong"]
    [broken] = wait_for(lambda: timeline_entries(stack, incident_id, "promise.broken"), 15,
                        "the broken promise")
    assert broken["actor"] == "promise keeper"
    due_s = int(datetime.fromisoformat(broken["detail"]["next_update_by"]).timestamp())
    for where in ("escalated", "broken"):  # the supervisor is sent each, by SMS
        delivery = f"alert-promise-{incident_id}-{due_s}-{where}-ha-thi-phuong-sms"
        wait_for(lambda d=delivery: stack.redis.exists(stack.keys.delivery(d)), 10, delivery)
    assert stack.redis.zscore(stack.keys.promises(), incident_id) is None
    with stack.http("") as public:  # late, but the warning is still in force (24 h valid)
        assert statement_id in public.get("/cap.xml").text
    timeline = stack.cli_json("show", incident_id, *stack.as_officer())["timeline"]
    assert [e["action"] for e in timeline if e["action"].startswith("promise.")] == [
        "promise.set", "promise.due", "promise.set", "promise.escalated", "promise.broken"]
    cleared = stack.cli("incident", "promise", incident_id, "--none", "--token", officer)
    assert cleared.returncode == 0 and "no update promised" in cleared.stdout
    assert "next_update_by" not in stack.redis.hgetall(stack.keys.statement(statement_id))

    # A closed incident promises nothing more: its last statement stops saying so.
    stack.cli("incident", "promise", incident_id, "--in", "1h", "--token", officer)
    assert "next_update_by" in stack.redis.hgetall(stack.keys.statement(statement_id))
    close = IncidentClosed(id=f"act-{uuid.uuid4().hex[:20]}", incident_id=incident_id,
                           reason="nước đã rút", actor="token:duty-officer", via="cli")
    produce(stack, topics.INCIDENT_EVENTS.name, incident_id, close.to_bytes())
    stack.wait_for_status(incident_id, "closed")
    assert "next_update_by" not in stack.redis.hgetall(stack.keys.statement(statement_id))
    assert stack.redis.zscore(stack.keys.promises(), incident_id) is None
