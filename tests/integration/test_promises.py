"""Promised updates on the real stack: a flood statement promises the next update as its
playbook says, the public page and CAP show it, a duty officer moves it, and the worker
reminds of it and flags it once broken; an expired alert leaves /cap.xml."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import pytest

from coordinator.feeds import local_stamp
from tests.integration.factories import approve_a_flood, timeline_entries
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def test_a_statement_promises_its_next_update_and_a_broken_promise_is_flagged(
        stack: Stack) -> None:
    incident_id, statement_id = approve_a_flood(stack, "hn-cau-giay-mai-dich",
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
    assert re.findall(r"<expires>([^<]+)</expires>", alert) == [
        local_stamp(promised, "Asia/Ho_Chi_Minh")] * 2  # one <info> per language
    assert statement_id in index

    officer = stack.token("duty-officer", "duty_officer")
    moved = stack.cli("incident", "promise", incident_id, "--in", "3s", "--token", officer)
    assert moved.returncode == 0, moved.stderr
    assert f"{incident_id}: next update promised by" in moved.stdout
    # Due within the reminder window at once: reminded, then flagged once it has passed.
    wait_for(lambda: timeline_entries(stack, incident_id, "promise.due"), 10, "the reminder")
    [broken] = wait_for(lambda: timeline_entries(stack, incident_id, "promise.broken"), 15,
                        "the broken promise")
    assert broken["actor"] == "promise keeper"
    assert stack.redis.zscore(stack.keys.promises(), incident_id) is None
    with stack.http("") as public:
        assert statement_id not in public.get("/cap.xml").text  # expired: not in force
    assert [e["action"] for e in stack.cli_json("show", incident_id)["timeline"]
            if e["action"].startswith("promise.")] == ["promise.set", "promise.due",
                                                       "promise.broken"]
    cleared = stack.cli("incident", "promise", incident_id, "--none", "--token", officer)
    assert cleared.returncode == 0 and "no update promised" in cleared.stdout
    assert "next_update_by" not in stack.redis.hgetall(stack.keys.statement(statement_id))
