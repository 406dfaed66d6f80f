"""Approval chains, who may decide, and what a deadline does: pure, with exact times."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from coordinator.approvals.chain import code_matches, reply_code, snapshot_chain
from coordinator.approvals.decisions import all_mode_waiting, refusal, unseen
from coordinator.city import Absence, City, Person, load_city
from coordinator.errors import ConfigError
from coordinator.escalation.policy import (
    Escalate,
    Exhaust,
    Ignore,
    enter_level,
    hold_alert_due,
    level_timers,
    next_step,
)
from coordinator.events import (
    ApprovalRequest,
    Decision,
    Draft,
    RenderedText,
    Severity,
)
from coordinator.model.approval import ApprovalRecord
from coordinator.settings import REPO_ROOT
from coordinator.signing import derived_key
from tests.unit.factories import T0, make_request, record_at


def person(pid: str, delegate: str | None = None, away: tuple[datetime, datetime] | None = None
           ) -> Person:
    """An approver `pid`, with a delegate and an absence (from, until) if given."""
    absent = [Absence.model_validate({"from": away[0], "until": away[1]})] if away else []
    return Person(id=pid, name=pid, phone="+84900000000", email=f"{pid}@x.example",
                  delegate=delegate, absent=absent)


PEOPLE = {p.id: p for p in [person("a1"), person("a2"), person("b1"), person("c1")]}


def test_a_passed_deadline_escalates_to_the_next_level() -> None:
    """At level 1, 1.5 s after its deadline: level 2 holds it, with a fresh deadline from now."""
    request = make_request([["a1", "a2"], ["b1"], ["c1"]])
    record = record_at(request, 1, T0 + timedelta(seconds=60), ["a1", "a2"])
    now = T0 + timedelta(seconds=61.5)
    step = next_step(record, 1, now, PEOPLE)
    assert isinstance(step, Escalate)
    assert step.lateness_s == 1.5 and step.entry.notes == []
    assert step.entry.level == 2 and step.entry.holders == ["b1"]
    assert step.entry.deadline == now + timedelta(seconds=60)


def test_the_last_deadline_exhausts_the_chain() -> None:
    """At the last level, the playbook's rule applies."""
    request = make_request([["a1"], ["b1"]], on_exhausted="duty_officer")
    record = record_at(request, 2, T0, ["b1"])
    assert next_step(record, 2, T0, PEOPLE) == Exhaust("duty_officer", [], 0.0)


def test_publish_on_exhaustion_needs_extreme_severity() -> None:
    """Below extreme, `publish` holds instead, and says why."""
    severe = record_at(make_request([["a1"]], on_exhausted="publish"), 1, T0, ["a1"])
    step = next_step(severe, 1, T0, PEOPLE)
    assert isinstance(step, Exhaust) and step.rule == "hold"
    assert step.notes == ["`publish` on exhaustion needs extreme severity (this is severe): "
                          "holding for a decision instead"]
    extreme = record_at(make_request([["a1"]], on_exhausted="publish",
                                     severity=Severity.extreme), 1, T0, ["a1"])
    assert next_step(extreme, 1, T0, PEOPLE) == Exhaust("publish", [], 0.0)


@pytest.mark.parametrize(("changes", "fired", "why"), [
    ({"status": "approved"}, 1, "already approved"),
    ({"level": 2}, 1, "stale: the request is at level 2 (level)"),
    ({"phase": "held"}, 1, "stale: the request is at level 1 (held)"),
    ({"due": T0 + timedelta(seconds=5)}, 1, "not due yet"),
])
def test_a_stale_or_early_timer_does_nothing(changes: dict[str, object], fired: int,
                                              why: str) -> None:
    """A decided request, a timer of a level already left, or an early one: Ignore."""
    record = record_at(make_request([["a1"], ["b1"]]), 1, T0, ["a1"]).evolve(**changes)
    assert next_step(record, fired, T0, PEOPLE) == Ignore(why)


def test_an_absent_approver_is_replaced_by_their_delegate() -> None:
    """a1 is away with delegate a2: a2 holds the level, and the note says so."""
    away = (T0 - timedelta(days=1), T0 + timedelta(days=1))
    people = {**PEOPLE, "a1": person("a1", delegate="b1", away=away)}
    entry, notes = enter_level(make_request([["a1"], ["c1"]]), 1, people, T0)
    assert entry is not None and entry.level == 1 and entry.holders == ["b1"]
    assert notes == [f"a1 is away until {away[1].isoformat()}: delegated to b1"]


def test_a_level_with_nobody_available_is_skipped() -> None:
    """Everyone at level 1 away, no delegate: level 2 is entered at once."""
    away = (T0 - timedelta(days=1), T0 + timedelta(days=1))
    people = {**PEOPLE, "a1": person("a1", away=away)}
    entry, notes = enter_level(make_request([["a1"], ["c1"]]), 1, people, T0)
    assert entry is not None and entry.level == 2 and entry.holders == ["c1"]
    assert notes == [f"a1 is away until {away[1].isoformat()} and has no available delegate",
                     "level 1 skipped: nobody available"]


def test_an_approver_removed_from_the_config_since_is_not_waited_for() -> None:
    """The chain is a snapshot: a1, removed from the config since, cannot be asked; the
    level goes on without them, or is skipped when nobody else holds it."""
    people = {k: v for k, v in PEOPLE.items() if k != "a1"}
    entry, notes = enter_level(make_request([["a1", "b1"], ["c1"]]), 1, people, T0)
    assert entry is not None and (entry.level, entry.holders) == (1, ["b1"])
    assert notes == ["a1 is no longer in the config: not asked"]
    entry, notes = enter_level(make_request([["a1"], ["c1"]]), 1, people, T0)
    assert entry is not None and (entry.level, entry.holders) == (2, ["c1"])
    assert notes == ["a1 is no longer in the config: not asked",
                     "level 1 skipped: nobody available"]


def test_an_absence_that_ended_does_not_count() -> None:
    """Availability is judged at `now`: after the window, the person is asked again."""
    away = (T0 - timedelta(days=2), T0 - timedelta(days=1))
    people = {**PEOPLE, "a1": person("a1", away=away)}
    entry, notes = enter_level(make_request([["a1"]]), 1, people, T0)
    assert entry is not None and entry.holders == ["a1"] and notes == []


def test_an_absence_without_its_utc_offset_is_refused_at_load_naming_its_line(
        tmp_path: Path) -> None:
    """`from: 2026-12-22` reads as a time with no offset: compared with the time now it
    failed every escalation into that person's level. Loading says where it is instead."""
    config = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", config)
    departments = config / "departments.yaml"
    text = departments.read_text(encoding="utf-8")
    with_offset = '{from: "2026-12-22T00:00:00+07:00", until'
    assert with_offset in text
    departments.write_text(text.replace(with_offset, "{from: 2026-12-22, until"), "utf-8")
    line = 1 + text[:text.index(with_offset)].count("\n")
    with pytest.raises(ConfigError) as caught:
        load_city(config)
    assert str(caught.value) == (f"{departments}:{line}: departments[1].approvers[0].absent[0]"
                                 ".from: Input should have timezone info")


def test_earlier_levels_may_still_decide_after_an_escalation() -> None:
    """Escalated to level 2: a1 (level 1) may still decide; c1 (level 3, not reached) may not."""
    request = make_request([["a1"], ["b1"], ["c1"]])
    record = record_at(request, 2, T0, ["b1"], eligible=["a1", "b1"])
    decide = lambda who: Decision(id="dec-000001", approval_id=request.id,  # noqa: E731
                                  approver_id=who, verdict="approve")
    assert refusal(record, decide("a1")) is None
    assert refusal(record, decide("b1")) is None
    assert refusal(record, decide("c1")) == (
        "c1 may not decide APR-00001-1: it is at level 2 (d), held by b1")


def test_a_decided_request_names_who_decided_and_when() -> None:
    """The first valid decision wins; a late one is told who decided and when."""
    record = record_at(make_request([["a1", "a2"]]), 1, T0, ["a1", "a2"], status="approved",
                       decided_by="a1", decided_at="2026-11-22T07:03:00+00:00")
    late = Decision(id="dec-000002", approval_id="APR-00001-1", approver_id="a2",
                    verdict="approve")
    assert refusal(record, late) == "already approved by a1 at 2026-11-22T07:03:00+00:00"


def test_a_rejection_needs_a_reason() -> None:
    """A reject without a reason is refused, so the duty officer always learns why."""
    record = record_at(make_request([["a1"]]), 1, T0, ["a1"])
    blank = Decision(id="dec-000003", approval_id="APR-00001-1", approver_id="a1",
                     verdict="reject", comment="  ")
    assert refusal(record, blank) == "a rejection needs a reason"


def test_an_edit_is_refused_where_others_approve_the_draft_too() -> None:
    """Edit-and-approve must not publish wording that someone else approved unedited, nor
    be dropped while an `all` level still waits for others."""
    edit = [RenderedText(channel="web", language="vi", title="T", body="sửa")]
    mine = Decision(id="dec-000004", approval_id="APR-00001-1", approver_id="a1",
                    verdict="approve", texts=edit)
    alone = record_at(make_request([["a1", "a2"]]), 1, T0, ["a1", "a2"])
    assert refusal(alone, mine) is None  # `any` level: a1's edit completes the approval
    request = make_request([["a1", "a2"]])
    both = request.model_copy(update={"chain": [
        request.chain[0].model_copy(update={"mode": "all"})]})
    waiting = record_at(both, 1, T0, ["a1", "a2"])
    assert "an edit needs the whole approval" in (refusal(waiting, mine) or "")
    after_other = record_at(both, 1, T0, ["a1", "a2"], approved_by=["a2"])
    assert "an edit needs the whole approval" in (refusal(after_other, mine) or "")
    assert refusal(after_other, mine.model_copy(update={"texts": None})) is None


def test_an_all_level_left_behind_needs_everyone_who_held_it_delegates_included() -> None:
    """Level 1 needs all of a1 and a2; a1 was away, so d1 stood in. Escalated to level 2,
    level 1 still needs both who held it: d1 alone does not approve it, and a2 does not
    wait for a1, who was never asked. A record kept before holders were kept per level
    falls back to the chain's approvers."""
    request = make_request([["a1", "a2"], ["b1"]])
    request = request.model_copy(update={"chain": [
        request.chain[0].model_copy(update={"mode": "all"}), request.chain[1]]})
    moved = record_at(request, 2, T0, ["b1"], eligible=["d1", "a2", "b1"],
                      level_holders={1: ["d1", "a2"], 2: ["b1"]})
    assert all_mode_waiting(moved, "d1") == {"d1", "a2"}
    assert all_mode_waiting(moved, "a2") == {"d1", "a2"}
    assert all_mode_waiting(moved, "b1") == set()  # level 2 is `any`
    held = moved.evolve(phase="held")  # past the whole chain: the same
    assert all_mode_waiting(held, "d1") == {"d1", "a2"}
    legacy = moved.evolve(level_holders={})
    assert all_mode_waiting(legacy, "a2") == {"a1", "a2"}
    assert all_mode_waiting(legacy, "d1") == set()


def test_holders_per_level_are_kept_in_the_record() -> None:
    """Written and read back as Redis keeps them; a record without them reads as none."""
    record = record_at(make_request([["a1"], ["b1"]]), 2, T0, ["b1"], eligible=["d1", "b1"],
                       level_holders={1: ["d1"], 2: ["b1"]})
    row = record.to_hash()
    assert row["level_holders"] == '{"1": ["d1"], "2": ["b1"]}'
    assert ApprovalRecord.from_hash(row) == record
    del row["level_holders"]
    assert ApprovalRecord.from_hash(row).level_holders == {}


def test_hold_alerts_come_in_order() -> None:
    """A held request's alert n is due only after alert n-1 and at its time."""
    record = record_at(make_request([["a1"]]), 1, T0, ["a1"], phase="held", alerts=2)
    assert hold_alert_due(record, 3, T0)
    assert not hold_alert_due(record, 2, T0)  # already sent
    assert not hold_alert_due(record, 3, T0 - timedelta(seconds=1))


def test_level_timers_are_the_deadline_and_its_reminders() -> None:
    """Reminders at 50% and 80% of a 100 s level, and the deadline itself."""
    request = make_request([["a1"]], within_s=100, reminders=[0.5, 0.8])
    due = T0 + timedelta(seconds=100)
    timers = level_timers(record_at(request, 1, due, ["a1"]))
    assert [(t.kind, t.at, t.job_id) for t in timers] == [
        ("deadline", due, "APR-00001-1:deadline:1:0"),
        ("reminder", T0 + timedelta(seconds=50), "APR-00001-1:reminder:1:50"),
        ("reminder", T0 + timedelta(seconds=80), "APR-00001-1:reminder:1:80"),
    ]


def test_the_chain_is_frozen_with_approver_ids_and_scaled_deadlines(city: City) -> None:
    """Department roles resolve to people; an extreme incident gets the playbook's factor."""
    from coordinator.playbooks.models import Approval, ChainLevel, Playbook

    approval = Approval(department="construction", chain=[
        ChainLevel(level=1, within=600), ChainLevel(department="people-committee", level=1,
                                                    within=300)],
        severity_factors={Severity.extreme: 0.5})
    playbook = Playbook.model_validate({
        "version": 1, "id": "t", "title": "t", "match": {"kinds": ["flood"]},
        "approval": approval.model_dump(), "channels": ["web"], "languages": ["vi"],
        "templates": {"vi": {"web": {"title": "t", "body": "b"}}}})
    chain = snapshot_chain(playbook, city, Severity.extreme)
    assert [(c.level, c.department, c.within_s) for c in chain] == [
        (1, "construction", 300.0), (2, "people-committee", 150.0)]
    assert chain[0].approvers == [p.id for p in city.departments["construction"].at_level(1)]
    assert snapshot_chain(playbook, city, Severity.severe)[0].within_s == 600.0


def test_a_reply_code_is_six_digits_of_a_keyed_hash() -> None:
    """The code is HMAC-SHA256(key, "request:person"), its first 8 bytes mod 10^6, zero-padded."""
    assert reply_code(b"k", "APR-00001-1", "a1") == "203727"  # checked with openssl dgst


def test_reply_codes_differ_by_person_version_and_key() -> None:
    """Each approver of each version has their own code; another key gives another code."""
    key = derived_key("test-secret-key-0123456789", "reply-code")
    assert reply_code(key, "APR-00001-1", "a1") == "302610"
    assert reply_code(key, "APR-00001-1", "a2") == "489624"
    assert reply_code(key, "APR-00001-2", "a1") == "730394"
    other_key = derived_key("another-secret-key-0123456789", "reply-code")
    assert reply_code(other_key, "APR-00001-1", "a1") == "340005"  # HMAC recomputed by hand


def test_a_code_matches_only_its_own_request_and_person() -> None:
    """The check recomputes the code: right for its pair, wrong for any other pair."""
    key = derived_key("test-secret-key-0123456789", "reply-code")
    assert code_matches(key, "APR-00001-1", "a1", "302610")
    assert code_matches(key, "APR-00001-1", "a1", " 302610 ")
    assert not code_matches(key, "APR-00001-1", "a2", "302610")
    assert not code_matches(key, "APR-00001-2", "a1", "302610")
    assert not code_matches(key, "APR-00001-1", "a1", "3026")


def test_a_legacy_request_with_a_shared_code_still_decodes() -> None:
    """Requests stored before keyed codes carried `reply_code`: read, and the code dropped."""
    stored = make_request([["a1"]]).model_dump(mode="json") | {"reply_code": "1234"}
    assert ApprovalRequest.model_validate(stored) == make_request([["a1"]])
    assert "reply_code" not in ApprovalRequest.model_validate(stored).model_dump()


def test_a_signed_link_round_trips_and_refuses_tampering() -> None:
    """A link verifies until it expires; a changed token or a wrong secret does not."""
    from coordinator.approvals.links import InvalidLink, LinkClaims, sign_link, verify_link

    claims = LinkClaims("APR-00001-1", "a1", "nonce-1", T0 + timedelta(minutes=15))
    token = sign_link("s3cret", claims)
    assert verify_link("s3cret", token, T0) == claims
    with pytest.raises(InvalidLink, match="expired"):
        verify_link("s3cret", token, T0 + timedelta(minutes=15))
    with pytest.raises(InvalidLink, match="not valid"):
        verify_link("other", token, T0)
    forged = sign_link("s3cret", LinkClaims("APR-00002-1", "a1", "n", claims.expires))
    with pytest.raises(InvalidLink, match="not valid"):
        verify_link("s3cret", forged.split(".")[0] + "." + token.split(".")[1], T0)


def test_a_translation_is_not_approved_by_an_sms_reply() -> None:
    """An SMS shows one text; a translator's version publishes others nobody approved by
    reading that SMS. Rejecting by SMS, and approving any other version by SMS, stay."""
    texts = [RenderedText(channel="sms", language="vi", body="[Loa] Ngập."),
             RenderedText(channel="sms", language="en", body="[Loa] Anything at all.")]
    draft = Draft(id="DRF-00001-2", incident_id="INC-00001", playbook_id="flood", version=2,
                  texts=texts, note="translation")
    by_sms = Decision(id="dec-000002", approval_id="APR-00001-2", approver_id="an",
                      verdict="approve", via="sms")
    assert unseen(draft, by_sms) == ("a translation is approved where all of it can be read: "
                                     "the link in the SMS, the email link or the inbox")
    assert unseen(draft, by_sms.model_copy(update={"via": "web"})) is None
    assert unseen(draft, by_sms.model_copy(update={"verdict": "reject"})) is None
    assert unseen(draft.model_copy(update={"note": ""}), by_sms) is None
    linked = draft.model_copy(update={"note": "", "spreading": ["https://x.example/p/1"]})
    assert unseen(linked, by_sms) == (
        "a correction naming where the claim spread is approved where all of it can be read: "
        "the link in the SMS, the email link or the inbox")
