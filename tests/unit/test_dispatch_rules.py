"""The pure rules of a fan-out: the ledger as read from its hash, who is not sent to any
more, the column each status counts in, the rate limit's lanes, how stuck work is told, what a
draft's SMS cost and when that needs a second approver, which SMS wait for their final
status and which of them are asked of the provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from channels.email import EmailChannel
from coordinator.approvals.decisions import needs_second_approver
from coordinator.city import load_city
from coordinator.dispatch.batches import _parts
from coordinator.dispatch.channels import build_channels, bulk_lane
from coordinator.dispatch.handover import reason_not_to_send, tally
from coordinator.dispatch.ledger import Ledger
from coordinator.dispatch.outcome_writes import FLUSH_EVERY_S, next_tick
from coordinator.dispatch.rate_limit import RateLimiter, lane_reserve
from coordinator.dispatch.reach import Reach, segment_costs
from coordinator.dispatch.status_sweep import (
    GIVE_UP_AFTER_S,
    ask_again_in,
    sort_due,
    unconfirmed,
)
from coordinator.events import DeliveryRequest, RenderedText
from coordinator.keys import Keys
from coordinator.outbox import wait_before_resend
from coordinator.settings import Settings
from coordinator.state import connect
from coordinator.stuck_work import Stuck
from tests.conftest import FIXTURE_MAP


def _request(**extra: str) -> DeliveryRequest:
    return DeliveryRequest(id="STM-00001-1:sms:sub-1", channel="sms", recipient="+84912000001",
                           text="Ngập", purpose="statement", **extra)


def test_a_ledger_is_read_from_its_hash() -> None:
    """Every field the recovery needs, with defaults for a fan-out that has not started."""
    ledger = Ledger.from_hash("STM-00001-1", {
        "started_at": "100.5", "progress_at": "130.0", "resolved": "1", "audience": "1200",
        "cursor": "77", "chunks": "2", "batches": "4", "withdrawn_at": "2026-12-02T16:00:00"})
    assert (ledger.started_at, ledger.progress_at, ledger.resolved, ledger.audience,
            ledger.cursor, ledger.chunks, ledger.batches, ledger.queued_all, ledger.finished,
            ledger.withdrawn_at) == (100.5, 130.0, True, 1200, 77, 2, 4, False, False,
                                     "2026-12-02T16:00:00")
    empty = Ledger.from_hash("STM-00002-1", {})
    assert (empty.resolved, empty.chunks, empty.progress_at, empty.queued_all) == (
        False, 0, 0.0, False)
    moved_never = Ledger.from_hash("STM-00003-1", {"started_at": "50", "queued_all": "1",
                                                   "finished_at": "60"})
    assert (moved_never.progress_at, moved_never.queued_all, moved_never.finished) == (
        50.0, True, True)


def test_why_a_delivery_is_not_sent() -> None:
    """Withdrawn first, then STOP (SMS only), then a subscriber who left; prompts and codes
    are never withdrawn with a statement."""
    statement_sms = _request(statement_id="STM-00001-1", subscriber_id="sub-1")
    assert reason_not_to_send(statement_sms, True, False, True) == "statement withdrawn"
    assert reason_not_to_send(statement_sms, True, True, False) == "recipient opted out (STOP)"
    assert reason_not_to_send(statement_sms, False, False, False) == (
        "subscriber is no longer active")
    assert reason_not_to_send(statement_sms, False, True, False) == ""
    prompt = DeliveryRequest(id="prompt:APR-1", channel="sms", recipient="+84901000101",
                             text="Duyệt?", person_id="nguyen-van-an")
    assert reason_not_to_send(prompt, False, False, True) == ""
    email = DeliveryRequest(id="STM-00001-1:email:sub-1", channel="email",
                            recipient="a@b.example", text="x", statement_id="STM-00001-1",
                            subscriber_id="sub-1")
    assert reason_not_to_send(email, True, True, False) == ""


def test_a_prompt_about_an_approval_is_not_sent_once_it_is_decided() -> None:
    """A prompt about an approval (a request, reminder, move up, hold alert) goes while the
    approval is pending (or its status is unknown: kept as sent); once decided, it would ask
    for an answer or an action nobody can take. The news that it was decided (`decided`,
    no `answer_for`) goes whatever the status."""
    asking = DeliveryRequest(id="prompt:APR-00001-1:request:1:0:nguyen-van-an", channel="sms",
                             recipient="+84901000101", text="Duyệt?",
                             person_id="nguyen-van-an", answer_for="APR-00001-1")
    assert reason_not_to_send(asking, False, False, False, "pending") == ""
    assert reason_not_to_send(asking, False, False, False, None) == ""
    assert reason_not_to_send(asking, False, False, False, "approved") == (
        "approval APR-00001-1 already approved")
    assert reason_not_to_send(asking, False, False, False, "withdrawn") == (
        "approval APR-00001-1 already withdrawn")
    telling = asking.model_copy(update={"id": "prompt:APR-00001-1:decided:1:0:an",
                                        "answer_for": None})
    assert reason_not_to_send(telling, False, False, False, "approved") == ""


def test_each_status_counts_in_its_column() -> None:
    """A provider's answer `queued` or `accepted` counts as sent; the ends as themselves."""
    assert [tally(s) for s in ("queued", "accepted", "delivered", "undelivered", "skipped")] == [
        "sent", "sent", "delivered", "failed", "skipped"]


def test_the_bulk_lane_leaves_a_fifth_of_a_second_for_prompts() -> None:
    """At least one token; a fifth of the rate above five a second. A limiter takes up to
    20 ms' worth of tokens a round trip (one at a time up to 50/s, never over 32), in a
    bucket of a second's worth plus the reserve."""
    assert [lane_reserve(r) for r in (0.5, 5, 10, 300)] == [1.0, 1.0, 2.0, 60.0]
    limiters = [RateLimiter(None, "k", rate) for rate in (10, 99, 300, 100_000)]
    assert [lim.take for lim in limiters] == [1, 1, 6, 32]
    assert [lim.burst for lim in limiters] == [12.0, 118.8, 360.0, 120_000.0]


def test_email_is_rate_limited_only_when_a_rate_is_set() -> None:
    """No email rate by default (an SMTP relay takes what it takes). With
    LOA_EMAIL_RATE_PER_S, every worker shares one bucket per sender address, and a
    statement's batches use the bulk lane, leaving prompts their reserve, as for SMS."""
    keys = Keys("t")
    plain = Settings(_env_file=None, smtp_host="127.0.0.1")  # type: ignore[call-arg]
    assert build_channels(plain, None, keys)["email"].limiter is None
    assert bulk_lane(build_channels(plain, None, keys), plain, None, keys)[
        "email"].limiter is None
    limited = Settings(_env_file=None, smtp_host="127.0.0.1",  # type: ignore[call-arg]
                       email_rate_per_s=300, email_from="Loa Hà Nội <loa@hanoi.example>")
    redis = connect("redis://127.0.0.1:1/0")  # a client; nothing is sent
    channels = build_channels(limited, redis, keys)
    prompt_email, batch_email = channels["email"], bulk_lane(
        channels, limited, redis, keys)["email"]
    prompt_lane, batch_lane = prompt_email.limiter, batch_email.limiter
    assert isinstance(prompt_email, EmailChannel) and isinstance(batch_email, EmailChannel)
    # one pool of connections for both lanes: LOA_SMTP_CONNECTIONS holds for the worker
    assert batch_email._slots is prompt_email._slots and batch_email._idle is prompt_email._idle
    assert isinstance(prompt_lane, RateLimiter) and isinstance(batch_lane, RateLimiter)
    assert (prompt_lane.key, prompt_lane.rate, prompt_lane.reserve) == (
        "t:rate:email:loa@hanoi.example", 300, 0.0)
    assert (batch_lane.key, batch_lane.reserve) == ("t:rate:email:loa@hanoi.example", 60.0)


def test_stuck_work_is_told_with_its_age() -> None:
    """Seconds, minutes, hours; the detail in brackets."""
    assert Stuck("fan-outs not finished", 2, 45.2, "STM-00001-1: 3 of 8 batches done").line() == (
        "fan-outs not finished: 2, the oldest waiting 45 s (STM-00001-1: 3 of 8 batches done)")
    assert Stuck("reports accepted, not taken in", 1, 725).line() == (
        "reports accepted, not taken in: 1, the oldest waiting 12 min")
    assert Stuck("dead letters not looked at", 3, 3 * 3600 + 1800).line() == (
        "dead letters not looked at: 3, the oldest waiting 3.5 h")


def test_what_a_drafts_sms_costs() -> None:
    """Each SMS subscriber costs their language's segments, else the fallback's: Vietnamese
    at 2 segments (UCS-2, 71..134 characters), English at 1; French and Thai readers of a
    statement without their language get English (their fallback), not Vietnamese; a
    language no longer declared costs the city's own language's."""
    texts = [RenderedText(channel="sms", language="vi", body="Ngập sâu " * 9),
             RenderedText(channel="sms", language="en", body="Deep flooding"),
             RenderedText(channel="email", language="vi", title="t", body="x" * 5000)]
    languages = load_city(Path(__file__).parents[2] / "config", FIXTURE_MAP).languages
    assert segment_costs(texts, languages) == ({"vi": 2, "en": 1, "fr": 1, "th": 1}, 2)
    # a segment count kept with the text is taken as it is
    kept = [texts[0].model_copy(update={"segments": 3})]
    assert segment_costs(kept, languages) == ({"vi": 3, "en": 3, "fr": 3, "th": 3}, 3)
    # no SMS text: nothing to send
    assert segment_costs(texts[2:], languages) == ({"vi": 0, "en": 0, "fr": 0, "th": 0}, 0)
    reach = Reach(sms=18, email=7, sms_segments=31)
    assert Reach.from_json(reach.to_json()) == reach and Reach.from_json(None) is None
    assert reach.line() == "SMS to 18 (31 segments), email to 7"


def test_a_costly_statement_needs_a_second_approver() -> None:
    """Above the cap one approval is not enough; two approvers, a reach at the cap, no
    reach counted, or no cap (0) let it go."""
    costly = Reach(sms=60_000, email=0, sms_segments=120_000)
    why = needs_second_approver(costly, ["nguyen-van-an"], 100_000)
    assert why == ("it would send SMS to 60,000 (120,000 segments), email to 0, above the "
                   "100,000 SMS segments one approval allows: a second approver must "
                   "approve too")
    assert needs_second_approver(costly, ["le-thi-thu-ha", "nguyen-van-an"], 100_000) is None
    assert needs_second_approver(Reach(50_000, 0, 100_000), ["a"], 100_000) is None
    assert needs_second_approver(None, ["a"], 100_000) is None
    assert needs_second_approver(costly, ["a"], 0) is None


def test_a_batch_is_read_as_a_lead_then_slices() -> None:
    ids = [str(n) for n in range(150)]
    parts = _parts(ids)
    assert [len(p) for p in parts] == [8, 64, 64, 14]
    assert [i for p in parts for i in p] == ids
    assert _parts(["a", "b"]) == [["a", "b"]]
    assert _parts([]) == [[]]


def test_a_kept_message_waits_twice_as_long_after_each_send_up_to_ten_minutes() -> None:
    assert [wait_before_resend(sends) for sends in range(8)] == [
        30.0, 30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0]
    assert [wait_before_resend(sends, 0.0) for sends in (0, 6)] == [0.0, 0.0]
    assert wait_before_resend(1, 900.0) == 900.0  # a longer first wait is kept as set
    assert wait_before_resend(10_000) == 600.0


def test_only_sms_the_provider_took_and_not_ended_wait_for_their_final_status() -> None:
    assert [unconfirmed("sms", status, "SM1") for status in (
        "queued", "accepted", "sending", "sent", "delivered", "undelivered", "failed")] == [
        True, True, True, True, False, False, False]
    assert not unconfirmed("sms", "queued", "")  # never taken: nothing to ask
    assert not unconfirmed("email", "sent", "<d-1@loa.example>")  # no status comes


def test_due_deliveries_are_asked_about_settled_or_given_up() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    handed = (now - timedelta(minutes=20)).isoformat()
    long_ago = (now - timedelta(seconds=GIVE_UP_AFTER_S + 1)).isoformat()
    ask, settled, given_up = sort_due({
        "d-1": ["queued", "SM1", "sms", handed],
        "d-2": ["delivered", "SM2", "sms", handed],  # its callback came after all
        "d-3": [None, None, None, None],  # no record any more
        "d-4": ["sent", "SM4", "sms", long_ago],
        "d-5": ["sent", "SM5", "sms", None],  # no time: not asked for ever
        "d-6": ["sent", "SM6", "sms", "2026-12-06T11:00:00"],  # no time zone: UTC's
        "d-7": ["sent", "SM7", "sms", "2026-11-30T12:00:00"],  # 6 days, UTC's: given up
    }, now)
    assert ask == {"d-1": "SM1", "d-6": "SM6"}
    assert settled == ["d-2", "d-3"]
    assert given_up == ["d-4", "d-5", "d-7"]


def test_a_message_not_final_is_asked_again_once_twice_as_old_at_most_every_6_hours() -> None:
    assert [ask_again_in(age, 900.0) for age in (600.0, 900.0, 1800.0, 7200.0, 30_000.0)] == [
        900.0, 900.0, 1800.0, 7200.0, 21_600.0]


def test_the_write_clock_ticks_every_20_ms_strictly_after_now() -> None:
    """The next write is the next multiple of 20 ms, strictly after now (0.06 / 0.02 is
    2.999… in floating point, and a tick at `now` itself would fire at once)."""
    assert FLUSH_EVERY_S == 0.02
    assert next_tick(0.0) == pytest.approx(0.02)
    assert next_tick(0.031) == pytest.approx(0.04)
    assert next_tick(1234.5671) == pytest.approx(1234.58)
    for now in (0.06, 0.04, 1000.0, 0.1):
        tick = next_tick(now)
        assert now < tick <= now + FLUSH_EVERY_S + 1e-9, (now, tick)
