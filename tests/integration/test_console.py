"""The console, the approver inbox and the public pages over HTTP, against the real
`loa web` and `loa worker` (a real broker and Redis behind them)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.factories import audit_events
from tests.integration.stack import Stack, wait_for
from tests.integration.webclient import WebSession

pytestmark = pytest.mark.integration
APPROVER = "nguyen-van-an"  # level 1 of `construction`, which approves floods


@pytest.fixture(scope="module")
def people(stack: Stack) -> dict[str, str]:
    """A duty officer and an approver account on the shared stack: username -> password."""
    if not stack.web_url:
        stack.start_web()
    return {"mai": stack.account("mai", "duty_officer", "tran-thi-mai"),
            "an": stack.account("an", "approver", APPROVER)}


# Logged in once for the module: each login of a duty officer takes a fresh TOTP code,
# and a code is good once (a new one comes every 30 s).
@pytest.fixture(scope="module")
def officer(stack: Stack, people: dict[str, str]) -> Iterator[WebSession]:
    """The duty officer mai, logged in with password and TOTP code, for the module."""
    session = WebSession(stack.web_url)
    assert session.login("mai", people["mai"], stack.totp_secrets["mai"]).url.path == "/console"
    yield session
    session.close()


@pytest.fixture(scope="module")
def approver(stack: Stack, people: dict[str, str]) -> Iterator[WebSession]:
    """The approver an (nguyen-van-an), logged in with a password, for the module."""
    session = WebSession(stack.web_url)
    assert session.login("an", people["an"]).url.path == "/inbox"
    yield session
    session.close()


def file_report(officer: WebSession, area: str, title: str, **extra: str) -> str:
    """File through the console form; returns the incident it landed in."""
    officer.get("/console/reports/new")
    answer = officer.post_form("/console/reports/new", {
        "kind": "flood", "severity": "severe", "area": area, "title": title,
        "details": "Nước ngập 40 cm", **extra})
    assert answer.status_code == 200, answer.text
    assert answer.url.path.startswith("/console/incidents/INC-"), answer.url
    return answer.url.path.rsplit("/", 1)[1]


def approval_of(stack: Stack, incident_id: str, version: int = 1) -> str:
    """The id of the approval request for draft `version`, once the worker made it."""
    approval_id = f"APR-{incident_id[4:]}-{version}"
    wait_for(lambda: stack.incident(incident_id).get("approval_id") == approval_id, 30,
             f"{approval_id} requested")
    return approval_id


def test_pages_need_a_login_and_a_wrong_password_says_so(stack: Stack,
                                                         people: dict[str, str]) -> None:
    """Without a session pages go to /login; any wrong login gets one 401 message, audited."""
    session = WebSession(stack.web_url)
    first = session.get("/console")
    assert first.url.path == "/login" and first.url.params["next"] == "/console"
    wrong = session.post_form("/login", {"username": "mai", "password": "not-it-at-all"})
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
    unknown = session.post_form("/login", {"username": "nobody", "password": "whatever-1234"})
    assert unknown.status_code == 401 and "Wrong username or password" in unknown.text
    assert session.get("/inbox").url.path == "/login"
    audit = audit_events(stack)
    assert {"login.failed"} <= {a["action"] for a in audit if a["subject"] in ("mai", "nobody")}
    session.close()


def test_a_form_without_the_sessions_csrf_token_is_refused(stack: Stack,
                                                           officer: WebSession) -> None:
    """A form post without this session's CSRF token is refused with 403."""
    forged = officer.http.post("/console/reports/new", data={
        "csrf": "forged", "kind": "flood", "severity": "minor", "area": "hn-cau-giay",
        "title": "Forged"})
    assert forged.status_code == 403 and "reload the page" in forged.text
    stranger = httpx.post(f"{stack.web_url}/login", data={"username": "mai", "password": "x"})
    assert stranger.status_code == 403


def test_an_approver_is_not_a_duty_officer(approver: WebSession) -> None:
    """A logged-in approver is refused the duty officers' console with 403."""
    refused = approver.get("/console")
    assert refused.status_code == 403 and "for duty officers" in refused.text


def test_the_report_form_names_each_bad_field_and_keeps_what_was_typed(
        officer: WebSession) -> None:
    """A bad report form answers 422 naming each bad field, keeping what was typed, escaped."""
    officer.get("/console/reports/new")
    answer = officer.post_form("/console/reports/new", {
        "kind": "flood", "severity": "severe", "area": "hn-nowhere",
        "title": "Ngập ở <b>đâu</b> đó", "details": "giữ lại chi tiết này"})
    assert answer.status_code == 422
    assert "area: unknown area &#39;hn-nowhere&#39;" in answer.text
    assert "Ngập ở &lt;b&gt;đâu&lt;/b&gt; đó" in answer.text and "<b>đâu" not in answer.text
    assert "giữ lại chi tiết này" in answer.text
    short = officer.post_form("/console/reports/new", {
        "kind": "Flood!", "severity": "severe", "area": "hn-cau-giay", "title": "x"})
    assert short.status_code == 422 and "kind:" in short.text and "title:" in short.text


def test_a_report_nobody_filed_is_not_waited_for(officer: WebSession) -> None:
    """The page of a report id nobody filed (a typo, a link from another Loa) answers 404
    at once; it does not wait seconds for the report to be taken in."""
    started = time.monotonic()
    answer = officer.get("/console/reports/t.duty-officer:rep-nobodyfiled1")
    assert answer.status_code == 404 and "no report" in answer.text
    assert time.monotonic() - started < 5  # the wait for a filed report is 10 s


def test_officer_files_approver_approves_in_the_inbox_and_it_is_public(
        stack: Stack, officer: WebSession, approver: WebSession) -> None:
    """Approved in the web inbox, a console report is published, escaped, in its own area only."""
    title = f"Ngập <script>alert(1)</script> {uuid.uuid4().hex[:6]}"
    incident_id = file_report(officer, "hn-cau-giay-dich-vong", title)
    approval_id = approval_of(stack, incident_id)
    board = officer.get("/console")
    assert incident_id in board.text and "<script>alert(1)" not in board.text
    assert 'data-deadline="' in board.text and "Nguyễn Văn An" in board.text

    inbox = approver.get("/inbox")
    assert f"/inbox/{approval_id}" in inbox.text
    request_page = approver.get(f"/inbox/{approval_id}")
    assert "sms · vi" in request_page.text and "web · en" in request_page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in request_page.text
    done = approver.post_form(f"/inbox/{approval_id}", {"verdict": "approve"})
    assert done.status_code == 200 and f"STM-{incident_id[4:]}-1 goes out" in done.text
    stack.wait_for_status(incident_id, "published")

    again = approver.post_form(f"/inbox/{approval_id}", {"verdict": "approve"})
    assert again.status_code == 409 and "already approved by nguyen-van-an" in again.text
    public = httpx.get(f"{stack.web_url}/?area=hn-cau-giay-dich-vong").text
    assert f"STM-{incident_id[4:]}-1" in public and "&lt;script&gt;alert(1)" in public
    elsewhere = httpx.get(f"{stack.web_url}/?area=hn-tay-ho").text
    assert f"STM-{incident_id[4:]}-1" not in elsewhere
    assert stack.timeline_actions(incident_id)[-3:] == [
        "approval.approved", "statement.published", "decision.refused"]


def test_edit_and_approve_publishes_the_approvers_wording(
        stack: Stack, officer: WebSession, approver: WebSession) -> None:
    """Edit-and-approve publishes the approver's wording; the timeline names what was edited."""
    incident_id = file_report(officer, "hn-cau-giay-mai-dich", "Ngập đường Hồ Tùng Mậu")
    approval_id = approval_of(stack, incident_id)
    page = approver.get(f"/inbox/{approval_id}")
    assert page.status_code == 200
    form = {"verdict": "edit_approve",
            "title:web:vi": "Ngập sâu đường Hồ Tùng Mậu (đã sửa)",
            "body:web:vi": "Nội dung do người phê duyệt sửa."}
    done = approver.post_form(f"/inbox/{approval_id}", form)
    assert done.status_code == 200, done.text
    stack.wait_for_status(incident_id, "published")
    statement = stack.api_get(f"/api/statements/STM-{incident_id[4:]}-1")
    web_vi = next(t for t in statement["texts"] if (t["channel"], t["language"]) == ("web", "vi"))
    assert web_vi == {**web_vi, "title": "Ngập sâu đường Hồ Tùng Mậu (đã sửa)",
                      "body": "Nội dung do người phê duyệt sửa."}
    approved = [e for e in stack.timeline(incident_id) if e["action"] == "approval.approved"]
    assert approved[0]["detail"]["edited"] == ["web/vi"]


def test_a_rejection_needs_a_reason_and_returns_the_incident(
        stack: Stack, officer: WebSession, approver: WebSession) -> None:
    """A rejection without a reason is refused (422); with one the incident is returned."""
    incident_id = file_report(officer, "hn-cau-giay-nghia-do", "Ngập phố Nghĩa Tân")
    approval_id = approval_of(stack, incident_id)
    approver.get(f"/inbox/{approval_id}")
    bare = approver.post_form(f"/inbox/{approval_id}", {"verdict": "reject"})
    assert bare.status_code == 422 and "needs a reason" in bare.text
    done = approver.post_form(f"/inbox/{approval_id}", {"verdict": "reject",
                                                        "reason": "Sai địa điểm"})
    assert done.status_code == 200 and "back with the duty officer" in done.text
    stack.wait_for_status(incident_id, "returned")


def redraft(officer: WebSession, incident_id: str, purpose: str, texts: dict[str, str],
            ) -> Any:
    """Post a new draft version (`purpose`) from the incident's page; the answer."""
    officer.get(f"/console/incidents/{incident_id}")
    return officer.post_form(f"/console/incidents/{incident_id}/drafts",
                             {"purpose": purpose, "note": "từ bàn điều hành", **texts})


def test_update_then_all_clear_then_close(stack: Stack, officer: WebSession,
                                          approver: WebSession) -> None:
    """Versions go back for approval; once public they are CAP Updates / a Cancel that
    reference what came before; closing makes the next report open a new incident."""
    incident_id = file_report(officer, "hn-cau-giay-quan-hoa", "Ngập phố Quan Hoa")
    number = incident_id[4:]
    approver.get(f"/inbox/APR-{number}-1")
    approver.post_form(f"/inbox/{approval_of(stack, incident_id)}", {"verdict": "approve"})
    stack.wait_for_status(incident_id, "published")

    answer = redraft(officer, incident_id, "update", {
        "title:web:vi": "Cập nhật: nước đã rút một phần", "body:web:vi": "Nước rút còn 10 cm.",
        "body:sms:vi": "[Loa] Cập nhật: nước rút còn 10 cm."})
    assert "draft version 2 made; approval APR-" in answer.text, answer.text
    page = officer.get(f"/console/incidents/{incident_id}").text
    assert "+Nước rút còn 10 cm." in page  # the diff between v1 and v2
    approver.get(f"/inbox/{approval_of(stack, incident_id, 2)}")
    approver.post_form(f"/inbox/APR-{number}-2", {"verdict": "approve"})
    wait_for(lambda: stack.redis.hget(stack.keys.statement(f"STM-{number}-2"), "announced"),
             30, "the update published")
    update = stack.api_get(f"/api/statements/STM-{number}-2")
    assert (update["msg_type"], update["references"]) == ("Update", [f"STM-{number}-1"])
    web_vi = next(t for t in update["texts"] if (t["channel"], t["language"]) == ("web", "vi"))
    assert web_vi["body"] == "Nước rút còn 10 cm."
    front = httpx.get(f"{stack.web_url}/?area=hn-cau-giay-quan-hoa").text
    assert f"STM-{number}-2" in front and f'id="STM-{number}-1"' not in front

    redraft(officer, incident_id, "all_clear", {
        "title:web:vi": "Đã hết ngập", "body:web:vi": "Giao thông trở lại bình thường."})
    approver.get(f"/inbox/{approval_of(stack, incident_id, 3)}")
    approver.post_form(f"/inbox/APR-{number}-3", {"verdict": "approve"})
    stack.wait_for_status(incident_id, "all_clear")
    clear = stack.api_get(f"/api/statements/STM-{number}-3")
    assert clear["msg_type"] == "Cancel"
    assert clear["references"] == [f"STM-{number}-1", f"STM-{number}-2"]

    officer.get(f"/console/incidents/{incident_id}")
    closed = officer.post_form(f"/console/incidents/{incident_id}/close",
                               {"reason": "đã xử lý xong"})
    assert f"{incident_id} closed" in closed.text
    assert stack.incident(incident_id)["status"] == "closed"
    later = file_report(officer, "hn-cau-giay-quan-hoa", "Ngập lại phố Quan Hoa")
    assert later != incident_id
    refused = redraft(officer, incident_id, "update", {"body:web:vi": "muộn"})
    assert f"refused: {incident_id} is closed" in refused.text
    assert "Hành động" not in refused.text  # a closed incident's page offers no actions


def test_a_new_version_supersedes_a_pending_request(stack: Stack, officer: WebSession,
                                                    approver: WebSession) -> None:
    """A new draft version supersedes the pending request: approving the old one answers 409."""
    incident_id = file_report(officer, "hn-cau-giay-trung-hoa", "Ngập phố Trung Kính")
    first = approval_of(stack, incident_id)
    answer = redraft(officer, incident_id, "edit", {
        "title:web:vi": "Ngập phố Trung Kính (sửa)", "body:web:vi": "Bản sửa của trực ban."})
    assert "draft version 2 made" in answer.text
    approver.get(f"/inbox/{first}")
    stale = approver.post_form(f"/inbox/{first}", {"verdict": "approve"})
    assert stale.status_code == 409
    assert f"already superseded by DRF-{incident_id[4:]}-2" in stale.text
    reselect = officer.post_form(f"/console/incidents/{incident_id}/drafts",
                                 {"purpose": "reselect", "playbook": "fallback"})
    assert "draft version 3 made; it waits for a duty officer" in reselect.text
    assert stack.incident(incident_id)["playbook"] == "fallback"


def test_attach_and_choose_a_playbook_by_hand(stack: Stack, officer: WebSession) -> None:
    """The report form can choose the playbook and attach a report to an existing incident."""
    incident_id = file_report(officer, "hn-cau-giay-yen-hoa", "Cây đổ đè dây điện",
                              playbook="utility-outage")
    assert stack.incident(incident_id)["chosen_playbook"] == "utility-outage"
    wait_for(lambda: stack.incident(incident_id).get("playbook") == "utility-outage", 30,
             "the chosen playbook")
    attached = file_report(officer, "hn-cau-giay-yen-hoa", "Thêm một cây đổ",
                           attach_to=incident_id)
    assert attached == incident_id
    assert stack.incident(incident_id)["report_count"] == "2"


def test_the_public_page_hears_of_a_publication(stack: Stack, officer: WebSession,
                                                approver: WebSession) -> None:
    """`GET /events` sends a `statement` event with the new id when one is published."""
    heard: list[str] = []
    streaming = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{stack.web_url}/events", timeout=60) as events:
            for line in events.iter_lines():
                streaming.set()  # the stream's first line: it hears what comes from now on
                if line.startswith("data:"):
                    heard.append(line)
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    # Not before: on a busy machine the thread's request could come after the publication.
    assert streaming.wait(30), "the event stream did not open"
    incident_id = file_report(officer, "hn-thanh-xuan-kim-giang", "Ngập đường Kim Giang")
    approval_id = approval_of(stack, incident_id)
    approver.get(f"/inbox/{approval_id}")
    approver.post_form(f"/inbox/{approval_id}", {"verdict": "approve"})
    listener.join(30)
    assert heard and f"STM-{incident_id[4:]}-1" in heard[0]


def test_press_archive_finds_statements_without_diacritics(stack: Stack, officer: WebSession,
                                                           approver: WebSession) -> None:
    """The press archive finds a statement by a query typed without Vietnamese diacritics."""
    incident_id = file_report(officer, "hn-thanh-xuan-khuong-dinh", "Ngập phố Khương Đình")
    approval_id = approval_of(stack, incident_id)
    approver.get(f"/inbox/{approval_id}")
    approver.post_form(f"/inbox/{approval_id}", {"verdict": "approve"})
    stack.wait_for_status(incident_id, "published")
    found = httpx.get(f"{stack.web_url}/press", params={"q": "khuong dinh"}).text
    assert f"STM-{incident_id[4:]}-1" in found and "/cap/STM-" in found
    none = httpx.get(f"{stack.web_url}/press", params={"q": "zzz-nothing"}).text
    assert f"STM-{incident_id[4:]}-1" not in none and 'id="none"' in none



def test_a_rumour_filed_in_the_console_and_its_translation_merged_by_form(
        stack: Stack, officer: WebSession) -> None:
    """The report form takes the claim and where it spreads; the incident page shows the
    claim, its wordings and the trend; the merge form joins the English one to it."""
    tag = uuid.uuid4().hex[:4]
    claim = f"Trường học ở Đống Đa {tag} cho học sinh nghỉ cả tuần vì dịch"
    first = file_report(officer, "hn-dong-da", "Tin đồn trường nghỉ học", kind="misinformation",
                        severity="moderate", claim=claim,
                        spreading="https://tiktok.example/v/1\nảnh chụp nhóm phụ huynh")
    shown = officer.get(f"/console/incidents/{first}").text
    assert claim in shown and 'id="trend"' in shown and "đang tăng / rising" in shown
    english = file_report(officer, "hn-dong-da", "Rumour: schools closed", kind="misinformation",
                          severity="moderate",
                          claim=f"Schools in Dong Da {tag} are closed all week for an outbreak")
    assert english != first
    officer.get(f"/console/incidents/{english}")
    answer = officer.post_form(f"/console/incidents/{english}/merge",
                               {"into": first, "reason": "bản tiếng Anh của cùng tin đồn"})
    assert answer.status_code == 200 and f"{english} merged into {first}" in answer.text
    assert stack.incident(english)["merged_into"] == first
    shown = officer.get(f"/console/incidents/{first}").text
    assert "2 cách nói / wordings reported" in shown and f"Schools in Dong Da {tag}" in shown
    assert stack.incident(first)["report_count"] == "2"
    assert 'id="fact"' in shown and "cải chính trước / correct by" in shown
    wait_for(lambda: stack.incident(first).get("status") == "awaiting_approval", 30, "v1")
    answer = officer.post_form(f"/console/incidents/{first}/fact", {
        "fact": "Các trường vẫn học bình thường.", "source": "Sở Giáo dục và Đào tạo"})
    assert f"approval APR-{first[4:]}-2 requested" in answer.text
    assert "Sự thật: Các trường vẫn học bình thường." in answer.text  # the new preview
    promised = officer.post_form(f"/console/incidents/{first}/promise", {"minutes": "45"})
    assert f"{first}: next update promised by" in promised.text
    assert stack.incident(first)["next_update_by"] in promised.text  # the countdown's data
    withdrawn = officer.post_form(f"/console/incidents/{first}/promise", {"minutes": "0"})
    assert "chưa hứa / none promised" in withdrawn.text


def test_a_translator_adds_a_language_version_before_approval(
        stack: Stack, officer: WebSession) -> None:
    """A collapse's playbook speaks Vietnamese and English: the incident page offers a
    version in each other declared language; one typed in goes for approval with the rest
    (SMS held to the draft's largest budget), one left empty is left out, and a language
    the city does not declare is refused naming the field."""
    incident_id = file_report(officer, "hn-cau-giay-dich-vong", "Sập tường rào",
                              kind="collapse")
    approval_of(stack, incident_id)
    page = officer.get(f"/console/incidents/{incident_id}").text
    assert "Add a version in Français (fr)" in page and "Add a version in ไทย (th)" in page
    assert "Add a version in English" not in page
    texts = {"title:web:vi": "Sập tường rào", "body:web:vi": "Tránh khu vực.",
             "body:sms:vi": "[Loa] Sập tường rào. Tránh khu vực.",
             "optional:web:fr": "1", "title:web:fr": "Effondrement d'un mur",
             "body:web:fr": "Évitez le secteur.", "optional:sms:fr": "1",
             "body:sms:fr": "[Loa] Effondrement d'un mur. Evitez le secteur.",
             "optional:web:th": "1", "title:web:th": "", "body:web:th": ""}
    refused = redraft(officer, incident_id, "edit", {**texts, "optional:web:es": "1",
                                                     "body:web:es": "Evite la zona."})
    assert refused.status_code == 422
    assert "body:web:es: &#39;es&#39; is not one of this city&#39;s languages" in refused.text
    answer = redraft(officer, incident_id, "edit", texts)
    assert "draft version 2 made" in answer.text, answer.text
    draft_id = stack.incident(incident_id)["draft_id"]
    draft = json.loads(stack.redis.get(stack.keys.draft(draft_id)))
    assert draft["version"] == 2
    slots = {(t["channel"], t["language"]): t for t in draft["texts"]}
    assert set(slots) == {("web", "vi"), ("sms", "vi"), ("web", "fr"), ("sms", "fr")}
    assert slots[("web", "fr")]["body"] == "Évitez le secteur."
    assert slots[("sms", "fr")]["segment_budget"] == slots[("sms", "vi")]["segment_budget"]


def test_a_translator_corrects_and_adds_versions_and_may_do_nothing_else(
        stack: Stack, officer: WebSession) -> None:
    """A translator's account lands on the drafts waiting for approval; on one, it corrects
    the English and adds French: the new version keeps the Vietnamese as the officer wrote
    it and goes for approval. The Vietnamese may not be touched (422), and the incident
    board, the inbox and closing are refused naming the role."""
    password = stack.account("dich", "translator")
    translator = WebSession(stack.web_url)
    try:
        landed = translator.login("dich", password)
        assert landed.url.path == "/console/translate", landed.url
        incident_id = file_report(officer, "hn-hoan-kiem-phuc-tan", "Sập giàn giáo",
                                  kind="collapse")
        approval_of(stack, incident_id)
        listed = translator.get("/console/translate").text
        assert f'href="/console/incidents/{incident_id}/translate"' in listed
        assert "Français, ไทย" in listed
        page = translator.get(f"/console/incidents/{incident_id}/translate").text
        assert "Add a version in Français (fr)" in page and 'name="body:web:en"' in page
        assert 'name="body:web:vi"' not in page  # the original is shown, not offered
        touched = translator.post_form(f"/console/incidents/{incident_id}/translate",
                                       {"body:web:vi": "Sửa bản gốc"})
        assert touched.status_code == 422 and "body:vi" in touched.text
        done = translator.post_form(f"/console/incidents/{incident_id}/translate", {
            "title:web:en": "Scaffolding collapse", "body:web:en": "Keep away.",
            "body:sms:en": "[Loa Hanoi] Scaffolding collapse. Keep away.",
            "title:email:en": "Scaffolding collapse", "body:email:en": "Keep away.",
            "optional:web:fr": "1", "title:web:fr": "Effondrement d'un échafaudage",
            "body:web:fr": "Éloignez-vous.", "optional:sms:th": "1", "body:sms:th": ""})
        assert done.status_code == 200 and "draft version 2 made" in done.text, done.text
        draft = json.loads(stack.redis.get(stack.keys.draft(
            stack.incident(incident_id)["draft_id"])))
        slots = {(t["channel"], t["language"]): t for t in draft["texts"]}
        assert draft["version"] == 2 and slots[("web", "en")]["body"] == "Keep away."
        assert slots[("web", "fr")]["title"] == "Effondrement d'un échafaudage"
        assert ("sms", "th") not in slots and ("web", "vi") in slots
        approval_of(stack, incident_id, 2)  # the translation goes for approval
        for path in ("/console", "/inbox", f"/console/incidents/{incident_id}"):
            refused = translator.get(path)
            assert refused.status_code == 403 and "(translator) may not" in refused.text, path
        closing = translator.post_form(f"/console/incidents/{incident_id}/close",
                                       {"reason": "x"})
        assert closing.status_code == 403
    finally:
        translator.close()
