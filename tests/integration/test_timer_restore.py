"""Escalation timers live in each worker's memory and are rebuilt from the approval records
in Redis: a worker killed and restarted, or a peer of a dead worker, still fires them."""

from __future__ import annotations

import pickle
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from coordinator.migrations import CURRENT
from tests.integration.drills import add_drill, drill_env
from tests.integration.factories import entry_time, file_drill, timeline_entries
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration
MakeStack = Callable[..., Stack]
# Level 1 lasts long enough for a worker to be stopped and another started before its
# deadline; its reminder (at 50 %) is sent by no one but a scheduler rebuilt from Redis:
# the sweep of overdue requests escalates, it never reminds.
REMIND = """\
    - {level: 1, within: 20s, reminders: [0.5]}
    - {level: 2, within: 60s}"""


def remind_env(root: Path) -> dict[str, str]:
    """The drill playbooks plus `drill-remind` (level 1: 20 s, reminded at 10 s)."""
    env = drill_env(root)
    add_drill(env, "drill-remind", REMIND)
    return env


def assert_reminded_then_escalated_once(stack: Stack, incident_id: str) -> None:
    """One reminder of level 1, then one escalation 1 -> 2 within 2 s of its deadline."""
    escalated = wait_for(lambda: timeline_entries(stack, incident_id, "approval.escalated"), 30,
                         "escalation")
    reminded = timeline_entries(stack, incident_id, "approval.reminded")
    assert [(e["detail"]["level"], e["detail"]["at_fraction"]) for e in reminded] == [(1, 0.5)]
    requested = timeline_entries(stack, incident_id, "approval.requested")[0]
    deadline = datetime.fromisoformat(requested["detail"]["deadline"])
    assert entry_time(reminded[0]) < deadline
    late = (entry_time(escalated[0]) - deadline).total_seconds()
    assert 0 <= late <= 2.0, f"escalated {late:.3f}s after its deadline"
    time.sleep(1)  # a second escalation (two workers, a sweep) would be in by now
    assert [(e["detail"]["from_level"], e["detail"]["to_level"])
            for e in timeline_entries(stack, incident_id, "approval.escalated")] == [(1, 2)]


def test_a_worker_killed_and_restarted_before_the_deadline_reminds_and_escalates_on_time(
        make_stack: MakeStack, tmp_path: Path) -> None:
    """SIGKILL right after the request is made, and the broker restarted empty (no event is
    replayed): the worker, started again before the deadline, rebuilds the timers from Redis
    alone, reminds once and escalates within 2 s."""
    stack = make_stack(**remind_env(tmp_path))
    stack.start_worker_and_web()
    incident_id, _ = file_drill(stack, "drill-remind")
    stack.stop_worker(sig=signal.SIGKILL)
    stack.restart_broker()
    stack.start_worker()
    assert_reminded_then_escalated_once(stack, incident_id)


def test_a_peer_reminds_and_escalates_when_the_worker_that_planned_is_gone(
        make_stack: MakeStack, tmp_path: Path) -> None:
    """w1 plans the request (w2 is not running yet); w2 starts, w1 stops (SIGTERM: its
    offsets are committed, so w2 is handed no event of the request): w2 reminds once and
    escalates within 2 s of the deadline."""
    stack = make_stack(**remind_env(tmp_path))
    stack.start_worker("w1")
    stack.start_web()
    incident_id, _ = file_drill(stack, "drill-remind")
    stack.start_worker("w2")
    stack.stop_worker("w1")
    assert_reminded_then_escalated_once(stack, incident_id)


class Canary:
    """Unpickled, it touches a file: proof that someone unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_an_old_pickled_job_store_is_deleted_unread(make_stack: MakeStack,
                                                    tmp_path: Path) -> None:
    """The job store an older Loa left in Redis is deleted when a worker starts, and what it
    held is never unpickled."""
    stack = make_stack()
    # data an older Loa left, migrated since (`loa migrate` leaves the job store for this)
    stack.redis.set(stack.keys.layout_version(), str(CURRENT))
    touched = tmp_path / "unpickled"
    jobs, run_times = stack.keys.legacy_timer_store()
    payload = pickle.dumps(Canary(touched), protocol=pickle.HIGHEST_PROTOCOL)
    stack.redis.hset(jobs, "APR-00001-1:deadline:1:0", payload)
    stack.redis.zadd(run_times, {"APR-00001-1:deadline:1:0": time.time() - 5})
    stack.start_worker()
    wait_for(lambda: not stack.redis.exists(jobs, run_times), 10, "the old store deleted")
    assert not touched.exists()
