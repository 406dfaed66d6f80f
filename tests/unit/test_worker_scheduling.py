"""How the OS schedules a worker (`LOA_WORKER_CPU_POLICY`): as batch work, every thread it
starts afterwards too, its niceness untouched. (A Linux policy is each thread's own: the
test asks in a thread of its own, and the rest of the test process is left as it was.)"""

from __future__ import annotations

import os
import threading

import pytest

from coordinator.runtime import schedule_as_batch
from coordinator.settings import Settings

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux's policies")


def test_a_worker_and_the_threads_it_starts_are_scheduled_as_batch_at_the_same_niceness(
) -> None:
    usual = os.sched_getscheduler(0)
    if usual == os.SCHED_BATCH:
        pytest.skip("a test run started as batch work would prove nothing")
    seen: dict[str, object] = {}

    def worker_thread() -> None:
        seen["nice before"] = os.getpriority(os.PRIO_PROCESS, 0)
        seen["said"] = schedule_as_batch()
        seen["policy"] = os.sched_getscheduler(0)
        started = threading.Thread(
            target=lambda: seen.__setitem__("started thread", os.sched_getscheduler(0)))
        started.start()
        started.join()
        seen["nice after"] = os.getpriority(os.PRIO_PROCESS, 0)

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join()
    nice = seen["nice before"]
    assert seen == {"nice before": nice, "said": True, "policy": os.SCHED_BATCH,
                    "started thread": os.SCHED_BATCH, "nice after": nice}
    assert os.sched_getscheduler(0) == usual  # the test's own thread is left as it was


def test_the_policy_is_batch_unless_set_to_normal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOA_WORKER_CPU_POLICY", raising=False)
    assert Settings(_env_file=None).worker_cpu_policy == "batch"  # type: ignore[call-arg]
    assert Settings(_env_file=None,  # type: ignore[call-arg]
                    worker_cpu_policy="normal").worker_cpu_policy == "normal"
    with pytest.raises(ValueError, match="worker_cpu_policy"):
        Settings(_env_file=None, worker_cpu_policy="idle")  # type: ignore[call-arg]
