"""What an approver's SMS says and how their answer is read: pure, with exact texts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from channels.segments import segment_count
from coordinator.approvals.prompts import (
    draft_sms,
    excerpt,
    fits_budget,
    prompt_text,
    sms_prompt_text,
)
from coordinator.events import RenderedText
from coordinator.inbound.answers import matching_requests, sms_refusal
from coordinator.inbound.sms_commands import Answer, parse_sms
from coordinator.model.approval import ApprovalRecord
from coordinator.signing import derived_key
from tests.unit.factories import T0, make_request

KEY = derived_key("test-secret-key-0123456789", "reply-code")
SHORT = ("[Loa Hà Nội] Cảnh báo ngập úng tại Phường Kim Mã: Ngập sâu. Tránh vùng ngập. "
         "Khẩn cấp: 114.")
LONG = ("[Loa Hà Nội] Cảnh báo ngập úng (nghiêm trọng) tại Phường Kim Mã: Ngập sâu trên phố "
        "Kim Mã. Tránh vùng ngập, tránh xa nguồn điện. Khẩn cấp: 114, 113, 115.")
HEAD = "[Loa] Cần phê duyệt APR-00001-1 (INC-00001), hạn 14:30 22/11. / Approval needed for " \
       "APR-00001-1 by 14:30 22/11."
ANSWER = ("Trả lời YES 302610 để duyệt, NO 302610 <lý do> để từ chối. / Reply YES 302610 to "
          "approve, NO 302610 <reason> to reject.")


def sms(body: str, budget: int | None = 4, language: str = "vi") -> RenderedText:
    """An SMS text of the draft in `language`, with a budget of `budget` segments."""
    return RenderedText(channel="sms", language=language, body=body, segment_budget=budget)


def record(status: str = "pending", eligible: tuple[str, ...] = ("a1",)) -> ApprovalRecord:
    """A pending record of a one-level request (a1, 30 min) with `status` and `eligible`."""
    request = make_request([["a1"]], within_s=1800, playbook_id="flood")
    return ApprovalRecord(request=request, status=status,  # type: ignore[arg-type]
                          phase="level", level=1, due=T0 + timedelta(minutes=30),
                          holders=["a1"], eligible=list(eligible), decided_by="b2")


def test_the_prompt_text_names_request_and_deadline_and_no_code() -> None:
    """The prompt (inbox, email, first SMS line) says what and by when, in local time."""
    assert prompt_text("request", record(), "Asia/Ho_Chi_Minh") == HEAD


def test_a_sign_off_prompt_points_to_the_inbox() -> None:
    """A duty officer signs off in the web inbox (no `loa approve --as`)."""
    text = prompt_text("sign_off", record(), "Asia/Ho_Chi_Minh", "https://loa.example")
    assert text.endswith("may sign off at https://loa.example/inbox/APR-00001-1")
    assert "--as" not in text


def test_a_draft_within_its_budget_is_quoted_in_full() -> None:
    """Prompt line, the whole SMS text in quotes, then how to answer with the code."""
    assert segment_count(SHORT) == 2 and fits_budget(sms(SHORT, 2))
    assert sms_prompt_text("request", HEAD, sms(SHORT, 2), "302610", "") == (
        f"{HEAD}\n«{SHORT}»\n{ANSWER}")


def test_a_draft_over_its_budget_is_quoted_in_part_with_a_link() -> None:
    """Over budget: the start, cut at a word, and the link to the whole draft."""
    assert segment_count(LONG) == 3 and not fits_budget(sms(LONG, 2))
    text = sms_prompt_text("reminder", HEAD, sms(LONG, 2), "302610", "https://l.example/d/x")
    assert text == (f"{HEAD}\n«[Loa Hà Nội] Cảnh báo ngập úng (nghiêm trọng) tại Phường Kim "
                    "Mã: Ngập sâu trên phố Kim Mã. Tránh…»\n"
                    f"Toàn văn / Full text: https://l.example/d/x\n{ANSWER}")


def test_a_draft_without_a_budget_is_held_to_two_segments() -> None:
    """No segment budget recorded: the playbooks' default of 2 applies."""
    assert fits_budget(sms(SHORT, None)) and not fits_budget(sms(LONG, None))


def test_without_a_code_the_prompt_says_where_to_answer() -> None:
    """No secret key, no code: the SMS points to the link instead of inventing one."""
    assert sms_prompt_text("moved_up", HEAD, sms(SHORT), None, "https://l.example/d/x") == (
        f"{HEAD}\n«{SHORT}»\nTrả lời tại / Answer at: https://l.example/d/x")


def test_a_prompt_that_asks_nothing_carries_no_draft_and_no_code() -> None:
    """Hold alerts, sign-offs and `decided` notes are their text alone."""
    assert sms_prompt_text("decided", "done", sms(SHORT), "302610", "x") == "done"


def test_the_excerpt_keeps_short_texts_and_flattens_lines() -> None:
    """A short text is kept whole (lines joined); a long word-less one is cut hard."""
    assert excerpt("a\n  b") == "a b"
    assert excerpt("x" * 120, limit=10) == "x" * 10 + "…"


def test_the_approvers_language_is_chosen_among_the_sms_texts() -> None:
    """Vietnamese first; else the first SMS text; web texts never."""
    web = RenderedText(channel="web", language="vi", body="w")
    assert draft_sms([web, sms("en", language="en"), sms("vi")], "vi") == sms("vi")
    assert draft_sms([web, sms("en", language="en")], "vi") == sms("en", language="en")
    assert draft_sms([web], "vi") is None


@pytest.mark.parametrize(("body", "expected"), [
    ("YES 302610", Answer("approve", "302610", "")),
    ("Có 012345", Answer("approve", "012345", "")),
    ("KHÔNG 302610 số liệu sai", Answer("reject", "302610", "số liệu sai")),
])
def test_six_digit_codes_are_read_with_leading_zeros(body: str, expected: Answer) -> None:
    """A code is read as typed: six digits, a leading zero kept."""
    assert parse_sms(body) == expected


def test_only_the_request_whose_code_it_is_matches() -> None:
    """Among a person's requests, the code picks its own; another person's code picks none."""
    candidates = ["APR-00001-2", "APR-00001-1"]
    assert matching_requests(KEY, "a1", candidates, "302610") == ["APR-00001-1"]
    assert matching_requests(KEY, "a1", candidates, "730394") == ["APR-00001-2"]
    assert matching_requests(KEY, "a2", candidates, "302610") == []


def test_a_code_for_a_settled_request_is_refused_with_the_reason() -> None:
    """Superseded, decided or withdrawn: said plainly; pending and eligible: no refusal."""
    assert sms_refusal(record(), "a1") is None
    assert "replaced by a newer version" in (sms_refusal(record("superseded"), "a1") or "")
    assert sms_refusal(record("approved"), "a1") == (
        "APR-00001-1 đã được quyết định (approved, b2). / APR-00001-1 was already approved "
        "by b2.")
    assert "withdrawn" in (sms_refusal(record("withdrawn"), "a1") or "")
    assert sms_refusal(record(eligible=()), "a1") == (
        "Anh/chị không còn quyết định APR-00001-1. / You may no longer decide APR-00001-1.")
