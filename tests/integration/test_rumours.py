"""False information on the real stack: retellings of one rumour become one incident, a
different rumour its own, and the same rumour in English is merged by a duty officer, after
which English retellings join the merged incident too."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.integration.factories import post_report, report_body, wait_for_incident
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def rumour(claim: str, area: str = "hn-hoan-kiem", **extra: Any) -> dict[str, Any]:
    return {"kind": "misinformation", "severity": "moderate", "area": area,
            "title": f"Tin đồn {uuid.uuid4().hex[:6]}", "claim": claim, **extra}


def detail(stack: Stack, incident_id: str) -> dict[str, Any]:
    with stack.http() as http:
        answer = http.get(f"/api/incidents/{incident_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_retellings_group_and_a_translation_is_merged_by_hand(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:4]  # this run's rumour, apart from any other on the shared stack
    first = post_report(stack, rumour(
        f"Nước máy ở Hoàn Kiếm {tag} bị nhiễm độc, không được uống!",
        spreading=["https://facebook.example/posts/1", "ảnh chụp tin nhắn Zalo nhóm cư dân"]))
    incident_id = wait_for_incident(stack, first)
    retold = [post_report(stack, rumour(text, area)) for text, area in (
        (f"nuoc may o hoan kiem {tag} bi nhiem doc khong duoc uong", "hn-hoan-kiem-hang-bac"),
        (f"NƯỚC MÁY Ở HOÀN KIẾM {tag} BỊ NHIỄM ĐỘC!!! Không được uống, chia sẻ ngay",
         "hn-ba-dinh"))]
    assert [wait_for_incident(stack, r) for r in retold] == [incident_id, incident_id]
    other = wait_for_incident(stack, post_report(stack, rumour(
        f"Cầu Long Biên {tag} sắp sập, không được đi qua", "hn-long-bien")))
    assert other != incident_id

    found = detail(stack, incident_id)
    assert found["report_count"] == "3" and found["claim"].startswith("Nước máy ở Hoàn Kiếm")
    assert sorted(found["claims"]) == sorted([first, *retold])
    assert (found["trend"]["recent"], found["trend"]["before"],
            found["trend"]["direction"]) == (3, 0, "rising")
    [opened] = [e for e in found["timeline"] if e["action"] == "incident.opened"]
    assert opened["detail"]["spreading"] == ["https://facebook.example/posts/1",
                                             "ảnh chụp tin nhắn Zalo nhóm cư dân"]

    english = post_report(stack, rumour(
        f"Tap water in Hoan Kiem {tag} is poisoned, do not drink it"))
    translated = wait_for_incident(stack, english)
    assert translated not in (incident_id, other)
    stack.wait_for_status(translated, "awaiting_approval")
    pending = stack.incident(translated)["approval_id"]

    officer = stack.token("duty-officer", "duty_officer")
    done = stack.cli("incident", "merge", translated, "--into", incident_id, "--reason",
                     "cùng tin đồn, bản tiếng Anh", "--token", officer)
    assert done.returncode == 0, done.stderr
    assert f"{translated} merged into {incident_id} (1 reports)" in done.stdout
    gone = stack.incident(translated)
    assert (gone["status"], gone["merged_into"]) == ("closed", incident_id)
    assert stack.redis.hget(stack.keys.approval(pending), "status") == "withdrawn"
    merged = detail(stack, incident_id)
    assert merged["report_count"] == "4" and english in merged["claims"]
    assert merged["trend"]["recent"] == 4
    assert [e["subject"] for e in merged["timeline"]
            if e["action"] == "incident.merged_in"] == [translated]

    # The English wording now belongs to the merged rumour: a retelling of it joins there.
    again = post_report(stack, rumour(f"Hoan Kiem {tag} tap water is poisoned - do not drink!"))
    assert wait_for_incident(stack, again) == incident_id
    wait_for(lambda: stack.incident(incident_id).get("report_count") == "5", 10, "5 reports")

    refused = stack.cli("incident", "merge", incident_id, "--into", translated, "--token",
                        officer)
    assert refused.returncode == 1 and f"{translated} is closed" in refused.stderr + refused.stdout


def test_after_a_merge_reports_like_the_merged_incidents_join_where_it_went(
        stack: Stack) -> None:
    """Two floods a duty officer finds are one (the same water, two wards): after the
    merge, the next report from the merged one's ward joins the incident it went into,
    rather than opening a third."""
    kept = wait_for_incident(stack, post_report(stack, report_body("hn-tay-ho-buoi")))
    folded_in = wait_for_incident(stack, post_report(stack, report_body("hn-tay-ho-thuy-khue")))
    assert kept != folded_in
    officer = stack.token("duty-officer", "duty_officer")
    done = stack.cli("incident", "merge", folded_in, "--into", kept, "--reason",
                     "cùng một trận ngập", "--token", officer)
    assert done.returncode == 0, done.stderr
    later = post_report(stack, report_body("hn-tay-ho-thuy-khue"))
    assert wait_for_incident(stack, later) == kept
    wait_for(lambda: stack.incident(kept).get("report_count") == "3", 10, "3 reports")


def test_a_correction_states_claim_fact_and_source_before_it_can_go_out(stack: Stack) -> None:
    """The playbook's correction leaves the fact blank: approving it is refused until the
    duty officer states the fact and its source; the approved correction's page carries its
    ClaimReview, rumour control lists it, and the record says the clock was met."""
    tag = uuid.uuid4().hex[:4]
    claim = f"Cầu Chương Dương {tag} bị nứt, sắp đóng cửa vĩnh viễn"
    incident_id = wait_for_incident(stack, post_report(stack, rumour(
        claim, "hn-long-bien", spreading=["https://tiktok.example/v/42", "tin nhắn Zalo"])))
    stack.wait_for_status(incident_id, "awaiting_approval")
    # The same claim, seen in Ba Dinh by a reporter who may file only there: it joins the
    # rumour, and its link is in the next version, but it does not raise the severity of an
    # incident in Long Bien.
    ba_dinh = stack.token("desk-ba-dinh", "reporter", area="hn-ba-dinh")
    retold = post_report(stack, rumour(claim, "hn-ba-dinh", severity="extreme",
                                       spreading=["https://zalo.example/g/7"]), ba_dinh)
    assert wait_for_incident(stack, retold) == incident_id
    assert stack.incident(incident_id)["severity"] == "moderate"
    [joined] = [e for e in detail(stack, incident_id)["timeline"]
                if e["action"] == "incident.report_attached"]
    assert joined["detail"]["severity_held"] == "filed outside the filer's area"
    first = detail(stack, incident_id)["approval"]
    approver = stack.as_person(first["approvers"][0])
    blank = stack.cli("approve", first["id"], *approver)
    assert blank.returncode != 0 and "blanks to fill in" in blank.stdout + blank.stderr

    officer = stack.token("duty-officer", "duty_officer")
    fact = "Cầu được kiểm định ngày 1/12, kết cấu an toàn, vẫn thông xe bình thường."
    source = "Sở Xây dựng Hà Nội, kết quả kiểm định 01/12"
    stated = stack.cli("incident", "fact", incident_id, "--fact", fact, "--source", source,
                       "--token", officer)
    assert stated.returncode == 0, stated.stderr
    second = f"APR-{incident_id[4:]}-2"
    assert f"approval {second} requested" in stated.stdout
    done = stack.cli("approve", second, *approver)
    assert done.returncode == 0, done.stderr
    stack.wait_for_status(incident_id, "published")
    statement_id = f"STM-{incident_id[4:]}-2"

    with stack.http("") as public:
        page = public.get(f"/statements/{statement_id}").text
        rumours = public.get("/rumours").text
    assert f"Thông tin sai: «{claim}»" in page and f"Sự thật: {fact}" in page
    review = json.loads(page.split('<script type="application/ld+json">')[1].split(
        "</script>")[0])
    assert (review["@type"], review["claimReviewed"], review["itemReviewed"]["appearance"],
            review["reviewRating"]["ratingValue"]) == (
        "ClaimReview", claim, [{"@type": "CreativeWork", "url": "https://tiktok.example/v/42"},
                               {"@type": "CreativeWork", "url": "https://zalo.example/g/7"}],
        1)
    assert review["url"].endswith(f"/statements/{statement_id}")
    assert f'id="rumour-{incident_id}"' in rumours and claim in rumours and source in rumours

    record = json.loads(stack.cli("incident", "report", incident_id, "--format", "json",
                                  "--token", officer).stdout)
    correction = record["claim"]["correction"]
    assert (record["claim"]["fact"], record["claim"]["source"], correction["met"]) == (
        fact, source, True)
    assert 0 < correction["took_s"] < 60 and correction["goal_s"] == 3600

    # A link reported after the approval is not published in its name.
    later = post_report(stack, rumour(claim, "hn-long-bien",
                                      spreading=["https://unapproved.example/p/1"]))
    assert wait_for_incident(stack, later) == incident_id
    with stack.http("") as public:
        again = public.get(f"/statements/{statement_id}", params={"lang": "vi"}).text
    assert "unapproved.example" not in again and "zalo.example/g/7" in again

    # A fact restated after publication is a new version waiting for approval: rumour
    # control keeps showing the fact that was approved, not the one nobody has approved.
    unapproved = f"Kho bạc {tag}, chưa duyệt"
    restated = stack.cli("incident", "fact", incident_id, "--fact", "Cầu đóng cửa để sửa.",
                         "--source", unapproved, "--token", officer)
    assert restated.returncode == 0, restated.stderr
    assert stack.incident(incident_id)["fact_source"] == unapproved
    with stack.http("") as public:  # another address than before: not the page cached then
        rumours = public.get("/rumours", params={"lang": "vi"}).text
    assert source in rumours and unapproved not in rumours


def test_a_claim_kind_without_its_claim_is_refused_naming_the_field(stack: Stack) -> None:
    with stack.http() as http:
        answer = http.post("/api/reports", json={
            "kind": "rumor", "severity": "minor", "area": "hn-ba-dinh", "title": "Tin đồn"})
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"field": "claim", "message": (
        "a rumor report says what the false claim is, in the words that are spreading")}]
