"""The surge detector on the real stack: reports, and tips that name a kind and an area,
counted per minute in Redis (an anonymous source's tips once); three of a kind in one ward
within ten minutes (the threshold this stack sets) raise one surge, on the incident's
timeline, the board and the API, and the duty officer who prefers SMS gets it by SMS; a
fourth does not raise it again, and the district containing the ward does not raise its
own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordinator.events import Report, Severity
from coordinator.incidents.intake import take_in_report
from coordinator.incidents.surge import detect, queue_counts_read
from coordinator.runtime import Runtime
from tests.integration.factories import (
    post_report,
    report_body,
    timeline_entries,
    wait_for_incident,
)
from tests.integration.stack import Stack, running, wait_for
from tests.integration.webclient import WebSession

pytestmark = pytest.mark.integration
MAI = "+84901000001"  # the duty officer tran-thi-mai, who prefers SMS in this stack's config


@pytest.fixture(scope="module")
def surge_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("surges")
    config = root / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", config)
    people = yaml.safe_load((config / "departments.yaml").read_text(encoding="utf-8"))
    people["duty_officers"][0]["preferred_channel"] = "sms"
    (config / "departments.yaml").write_text(yaml.safe_dump(people, allow_unicode=True),
                                             encoding="utf-8")
    # The test stands behind a proxy it trusts, so that it can speak as several clients.
    with running(root / "stack", sms=True, LOA_CONFIG_DIR=str(config),
                 LOA_SURGE_THRESHOLD="3", LOA_TRUSTED_PROXIES="127.0.0.1/32") as stack:
        yield stack


def surges(stack: Stack) -> list[dict[str, Any]]:
    with stack.http() as http:
        answer = http.get("/api/surges")
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_three_reports_in_a_ward_raise_one_surge_and_tell_the_duty_officer(
        surge_stack: Stack) -> None:
    stack = surge_stack
    first = post_report(stack, report_body("hn-hoan-kiem-hang-bac"))
    incident_id = wait_for_incident(stack, first)
    for _ in range(2):
        wait_for_incident(stack, post_report(stack, report_body("hn-hoan-kiem-hang-bac")))
    [surge] = wait_for(lambda: surges(stack), 10, "the surge")
    assert (surge["kind"], surge["area"], surge["count"], surge["incident_id"],
            surge["window_s"]) == ("flood", "hn-hoan-kiem-hang-bac", 3, incident_id, 600)
    [entry] = timeline_entries(stack, incident_id, "surge.detected")
    assert entry["subject"] == surge["id"] and entry["actor"] == "surge detector"
    [sms] = wait_for(lambda: stack.sms_sent(to=MAI), 10, "the duty officer's SMS")
    assert sms["body"] == (f"Loa: 3 báo cáo/tin báo «Ngập lụt» tại Phường Hàng Bạc trong 10 "
                           f"phút ({incident_id}). / 3 reports/tips of Flood in Hang Bac Ward "
                           f"in 10 minutes ({incident_id}).")

    # A fourth in the ward, and two in another ward of the district (five in Hoàn Kiếm):
    # the ward's surge was raised, and the district's is the same one.
    for area in ("hn-hoan-kiem-hang-bac", "hn-hoan-kiem-trang-tien", "hn-hoan-kiem-trang-tien"):
        wait_for_incident(stack, post_report(stack, report_body(area)))
    assert len(surges(stack)) == 1 and len(stack.sms_sent(to=MAI)) == 1


def test_tips_count_once_per_anonymous_source_and_the_board_lists_the_surges(
        surge_stack: Stack) -> None:
    stack = surge_stack

    def tip(client: str, n: int) -> None:
        with stack.http("") as anonymous:
            answer = anonymous.post("/api/tips", headers={"X-Forwarded-For": client}, json={
                "text": f"Khói bốc lên từ chợ Đồng Xuân, lần {n}", "kind": "fire",
                "area": "hn-hoan-kiem-dong-xuan"})
        assert answer.status_code == 202, answer.text

    told = len(stack.sms_sent(to=MAI))  # by the module's earlier surges
    # One person tipping three times is one voice: kept, but no surge (a tip is taken in
    # and counted before its 202, so there is nothing to wait for).
    for n in range(3):
        tip("203.0.113.7", n)
    assert not [s for s in surges(stack) if s["kind"] == "fire"]
    with stack.http() as http:
        kept = http.get("/api/tips", params={"limit": 50}).json()["items"]
    assert len([t for t in kept if t["text"].startswith("Khói bốc lên từ chợ Đồng Xuân")]) == 3
    # Two more people: three voices.
    tip("203.0.113.8", 3)
    tip("198.51.100.20", 4)
    newest = wait_for(lambda: [s for s in surges(stack) if s["kind"] == "fire"], 10,
                      "the tips' surge")
    assert [(s["area"], s["count"], s["incident_id"]) for s in newest] == [
        ("hn-hoan-kiem-dong-xuan", 3, None)]
    wait_for(lambda: len(stack.sms_sent(to=MAI)) == told + 1, 10, "the surge's SMS")
    with stack.http() as http:
        paged = http.get("/api/surges", params={"limit": 1}).json()
    assert paged["items"][0]["id"] == newest[0]["id"] and paged["next_cursor"] == "1"

    session = WebSession(stack.web_url)
    password = stack.account("mai", "duty_officer", "tran-thi-mai")
    assert session.login("mai", password, stack.totp_secrets["mai"]).url.path == "/console"
    board = session.get("/console").text
    session.close()
    assert 'id="surges"' in board and "<strong>3</strong> Cháy · Phường Đồng Xuân" in board
    assert "<strong>3</strong> Ngập lụt · Phường Hàng Bạc" in board

    # A credential's holder tipping three times is one voice too: it raises nothing.
    with stack.http(stack.token("tip-press", "press")) as press:
        for n in range(3):
            assert press.post("/api/tips", json={
                "text": f"Tường rào chợ Đồng Xuân sắp đổ, lần {n}", "kind": "collapse",
                "area": "hn-hoan-kiem-dong-xuan"}).status_code == 202
    assert not [s for s in surges(stack) if s["kind"] == "collapse"]


async def test_the_intake_reads_the_surge_counts_with_its_report_counted(rt: Runtime) -> None:
    """The detector's reads ride in the intake's own transaction: what they see is what a
    read after it sees (the report counted in its ward and every area containing it); a
    drill is neither counted nor read."""
    ward = "hn-ba-dinh-kim-ma"
    path = rt.city.ancestors(ward)
    assert path[0] == ward and len(path) >= 2
    at = datetime(2026, 12, 6, 9, 30, 15, tzinfo=UTC)
    taken = []
    for number, exercise in ((1, False), (2, False), (3, True)):
        report = Report(id=f"rep-surge-{number}", kind="flood", severity=Severity.severe,
                        area=ward, title="Ngập", received_via="api", received_at=at,
                        exercise=exercise)
        taken.append(await take_in_report(rt.redis, rt.keys, report, 600.0, 0.4, path, 600.0))
    async with rt.redis.pipeline(transaction=False) as pipe:
        assert queue_counts_read(pipe, rt.keys, "flood", path, at.timestamp(), 600.0) == len(
            path) + 1
        after = await pipe.execute()
    assert taken[1].surge_seen == after and taken[2].surge_seen is None
    *counts, raised = after
    assert [window[0] for window in counts] == ["2"] * len(path)  # this minute: both reports
    assert taken[0].surge_seen is not None and taken[0].surge_seen[0][0] == "1"
    assert raised == [None] * len(path)
    # the detector takes them as they are: two are below the threshold of three
    assert await detect(rt.redis, rt.keys, rt.city, "flood", path, at, 600.0, 3,
                        taken[1].incident_id, taken[1].surge_seen) is None
    assert (await detect(rt.redis, rt.keys, rt.city, "flood", path, at, 600.0, 2,
                         taken[1].incident_id, taken[1].surge_seen)) is not None
