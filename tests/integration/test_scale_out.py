"""Several workers share one fan-out, and one of them dying mid-way loses and repeats nothing."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from coordinator.app import DELIVERY_CONCURRENCY
from tests.integration.factories import FanOutReceived, approve_a_flood, import_residents
from tests.integration.smtp_server import smtp_server
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration

SUBSCRIBERS = 300
# About 12 batches a channel. Batches are keyed statement:number and spread over the
# partitions by the key's hash; for STM-00001-1 the first batch on partition 0 is number 7.
BATCH_SIZE = 25


def owners(stack: Stack, statement: str) -> Counter[str]:
    """Which worker handed over how many of the statement's deliveries (the `owner` each
    delivery record keeps: worker id/instance)."""
    found: Counter[str] = Counter()
    for key in stack.redis.scan_iter(match=stack.keys.delivery("*"), count=1000):
        row = stack.redis.hmget(key, "statement_id", "owner", "status")
        if row[0] == statement and row[1] and row[2] != "sending":
            found[row[1].partition("/")[0]] += 1
    return found


def test_three_workers_share_a_fan_out_and_one_killed_repeats_nothing(
        make_stack: Any, tmp_path: Path) -> None:
    """Three workers on topics of three partitions (the default); 300 subscribers on SMS and
    email in batches of about 25, SMS throttled so the fan-out lasts. Once every worker has
    handed some deliveries over, one is killed with SIGKILL and not restarted. The other two
    finish: every subscriber has exactly one SMS (counted at the SMS endpoint) and one
    email Message-ID."""
    n = SUBSCRIBERS
    with smtp_server() as (port, inbox):
        stack = make_stack(sms=True, LOA_SMTP_HOST="127.0.0.1", LOA_SMTP_PORT=str(port),
                           LOA_SMS_RATE_PER_S="25",
                           LOA_DISPATCH_BATCH_SIZE=str(BATCH_SIZE))
        import_residents(stack, tmp_path, "09140", n, "hn-tay-ho", email=True)
        stack.start_workers("w1", "w2", "w3")
        stack.start_web()
        time.sleep(8)  # the consumer group settles with all three before the work comes
        incident_id, statement = approve_a_flood(stack, "hn-tay-ho-quang-an", "Ngập Quảng An")

        wait_for(lambda: len(owners(stack, statement)) == 3, 90,
                 "all three workers handing deliveries over", interval_s=0.5)
        stack.stop_worker("w2", sig=signal.SIGKILL)
        at_kill = owners(stack, statement)
        received = FanOutReceived(stack, inbox, statement, "09140")
        wait_for(lambda: len(received.sms()) >= n, 180, "every subscriber's SMS",
                 interval_s=1)
        wait_for(lambda: len(received.email_ids()) >= n, 120, "every email", interval_s=1)
        stack.wait_for_status(incident_id, "published")
        time.sleep(2)  # anything still in flight would land now
        # As with one worker killed: at most one email resent (same Message-ID) per
        # delivery the dead worker had under way.
        received.assert_each_once(n, DELIVERY_CONCURRENCY, at_kill)
        after = owners(stack, statement)
        print(f"scale-out: deliveries per worker at the kill {dict(at_kill)}, "
              f"at the end {dict(after)}")
        assert after["w2"] == at_kill["w2"]  # the dead worker did nothing more
        assert after["w1"] + after["w3"] > at_kill["w1"] + at_kill["w3"]  # the others went on


def test_a_worker_joining_mid_batch_does_not_wait_for_the_batch(
        make_stack: Any, tmp_path: Path) -> None:
    """One worker hands over a batch of 80 SMS at 8 a second (10 s). A second worker joins:
    the rebalance takes the partitions away from the first, whose batch under way stops and
    goes back on its topic (its log says so) rather than holding the rebalance until its
    last SMS, past the group's timeout; the partition's owner after the rebalance finishes
    it. Every subscriber gets exactly one SMS (counted at the SMS endpoint)."""
    n = 80
    with smtp_server() as (port, inbox):
        stack = make_stack(sms=True, LOA_SMTP_HOST="127.0.0.1", LOA_SMTP_PORT=str(port),
                           LOA_SMS_RATE_PER_S="8", LOA_DISPATCH_BATCH_SIZE="500")
        import_residents(stack, tmp_path, "09150", n, "hn-tay-ho")
        stack.start_worker("w1")
        stack.start_web()
        _, statement = approve_a_flood(stack, "hn-tay-ho-quang-an", "Ngập Quảng An")
        received = FanOutReceived(stack, inbox, statement, "09150")
        wait_for(lambda: len(received.sms()) >= 8, 60, "the batch under way", interval_s=0.3)
        stack.start_worker("w2")
        wait_for(lambda: len(received.sms()) >= n, 120, "every subscriber's SMS", interval_s=1)
        time.sleep(2)  # anything still in flight would land now
        sent = Counter(received.sms())
    assert len(sent) == n and set(sent.values()) == {1}, sent.most_common(3)
    lines = [json.loads(line) for line in (stack.root / "worker-w1.log").read_text().splitlines()
             if line.startswith("{")]
    assert any(line["event"] == "rebalance: hand-overs under way go back on their topics"
               for line in lines), "the batch held the rebalance"
    assert any(line["event"] == "delivery batch" and line.get("given_back", 0) > 0
               for line in lines if line.get("statement") == statement)
