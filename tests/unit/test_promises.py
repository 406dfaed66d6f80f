"""Promised updates, the pure parts: which follow-up a publication promises, the stage a
promise is at, the duty officers' message, and CAP's <expires> and what is in force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator.city import load_city
from coordinator.feeds import cap
from coordinator.feeds.cap import current_alerts, expires_at
from coordinator.playbooks.models import FollowUp
from coordinator.settings import Settings
from coordinator.statements.promises import promise_alerts, promise_text, promised_after, stage
from tests.conftest import FIXTURE_MAP
from tests.unit.test_feeds import CAP_NS, build_cap, statement

DUE = datetime(2026, 12, 4, 8, 30, tzinfo=UTC)


def test_each_publication_promises_the_next_follow_up_then_repeats_the_last() -> None:
    ups = [FollowUp(after="2h", note="water levels"),  # type: ignore[arg-type]
           FollowUp(after="6h", note="drainage", every="3h")]  # type: ignore[arg-type]
    assert [promised_after(ups, k) for k in (1, 2, 3, 4)] == [7200, 21600, 10800, 10800]
    assert promised_after(ups[:1], 2) is None and promised_after([], 1) is None
    assert promised_after(ups, 0) is None


def test_the_duty_officers_hear_of_a_promise_due_and_broken() -> None:
    assert promise_text("INC-00007", "Ngập sâu", DUE, False, "Asia/Ho_Chi_Minh") == (
        "Loa: sắp đến hạn cập nhật đã hứa cho INC-00007 (Ngập sâu): 15:30 04/12. / "
        "Promised update for INC-00007 (Ngập sâu) is due at 15:30 04/12.")
    assert promise_text("INC-00007", "Ngập sâu", DUE, True, "Asia/Ho_Chi_Minh") == (
        "Loa: QUÁ HẠN cập nhật đã hứa cho INC-00007 (Ngập sâu), hạn 15:30 04/12. / "
        "Promised update for INC-00007 (Ngập sâu) is overdue: it was due 15:30 04/12.")


def test_a_drills_promise_says_so_and_supervisors_hear_of_it_only_when_escalated() -> None:
    assert promise_text("INC-00007", "Ngập sâu", DUE, True, "Asia/Ho_Chi_Minh",
                        ("[DIỄN TẬP]", "[EXERCISE]")) == (
        "[DIỄN TẬP] Loa: QUÁ HẠN cập nhật đã hứa cho INC-00007 (Ngập sâu), hạn 15:30 04/12. / "
        "[EXERCISE] Promised update for INC-00007 (Ngập sâu) is overdue: it was due "
        "15:30 04/12.")
    city = load_city(Settings(_env_file=None).config_dir, FIXTURE_MAP)  # type: ignore[call-arg]
    due = promise_alerts(city, "INC-00007", "Ngập sâu", DUE, "due", "Asia/Ho_Chi_Minh")
    escalated = promise_alerts(city, "INC-00007", "Ngập sâu", DUE, "escalated",
                               "Asia/Ho_Chi_Minh", exercise=True)
    stamp = int(DUE.timestamp())
    assert [r.id for r in escalated if r.person_id == "ha-thi-phuong"] == [
        f"alert-promise-INC-00007-{stamp}-escalated-ha-thi-phuong-sms"]
    assert "ha-thi-phuong" not in {r.person_id for r in due}
    assert all(r.text.startswith("[DIỄN TẬP] ") and r.purpose == "alert" for r in escalated)


def test_cap_expires_after_the_validity_or_at_a_later_promise_then_leaves_the_index() -> None:
    promised = statement(1) | {"next_update_by": DUE.isoformat()}
    plain = statement(2, incident="INC-20261122-0002")  # published 2026-11-22T02:05:30Z
    assert expires_at(promised) == DUE
    assert expires_at(plain, 3600) == datetime(2026, 11, 22, 3, 5, 30, 123456, tzinfo=UTC)
    # A promise sooner than the validity does not shorten it: a late update must not take
    # a warning in force out of the feeds.
    soon = plain | {"next_update_by": "2026-11-22T02:35:30+00:00"}
    assert expires_at(soon, 3600) == datetime(2026, 11, 22, 3, 5, 30, 123456, tzinfo=UTC)
    alert = build_cap(promised)  # valid against both CAP schemas, <expires> in its place
    assert [e.text for e in alert.iter(f"{{{CAP_NS}}}expires")] == [
        "2026-12-04T15:30:00+07:00"] * 2
    later = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
    assert [s["id"] for s in current_alerts([promised, plain], later, 3600)] == [promised["id"]]
    assert current_alerts([promised, plain], DUE, 3600) == []
    assert len(current_alerts([promised, plain])) == 2  # no clock: cancellation only
    assert cap.DEFAULT_VALID_FOR_S == 86400


def test_a_promise_is_coming_then_about_to_be_broken_then_broken() -> None:
    assert stage(DUE, DUE - timedelta(minutes=5), 120) == "due"
    assert stage(DUE, DUE - timedelta(minutes=2), 120) == "escalated"
    assert stage(DUE, DUE - timedelta(seconds=1), 120) == "escalated"
    assert stage(DUE, DUE, 120) == "broken"
    assert stage(DUE, DUE - timedelta(seconds=1), 0) == "due"
