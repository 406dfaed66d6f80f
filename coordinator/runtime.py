"""What every handler needs: settings, Redis and its keys, the city, the playbooks."""

from __future__ import annotations

import gc
import os
import uuid
from dataclasses import dataclass, field

from coordinator.city import City, load_city
from coordinator.errors import ConfigError
from coordinator.keys import Keys
from coordinator.playbooks.loader import load_playbooks
from coordinator.playbooks.models import Playbook
from coordinator.settings import Settings
from coordinator.state import Redis, connect


@dataclass
class Runtime:
    """The handlers' shared context; built once per process by :func:`build_runtime`."""

    settings: Settings
    redis: Redis
    keys: Keys
    city: City
    playbooks: dict[str, Playbook]
    # This process, in heartbeats and delivery claims: a restarted worker is a new instance.
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def holder(self) -> str:
        """`worker/instance`: this process as the holder of a delivery's claim or a
        fan-out's lock (the claim script reads its heartbeat by the worker part)."""
        return f"{self.settings.worker_id}/{self.instance}"


def build_runtime(settings: Settings) -> Runtime:
    """Load config/ and playbooks/ and connect to Redis; raises ConfigError, PlaybookError."""
    if not settings.redis_url:
        raise ConfigError("LOA_REDIS_URL is not set and no `loa up` is running (see `loa doctor`)")
    city = load_city(settings.config_dir, settings.area_map)
    return Runtime(
        settings=settings,
        redis=connect(settings.redis_url),
        keys=Keys(settings.redis_prefix),
        city=city,
        playbooks=load_playbooks(settings.playbooks_dir, city),
    )


def settle_heap() -> None:
    """For a service process about to serve (`loa worker`, `loa web`, `loa scheduler`):
    collect, then set every object it has so far (modules, the city, playbooks,
    templates, the app) aside from the garbage collector's full collections, which then go
    through what was made since. In a worker under load a full collection took about 50 ms
    (190,000 objects) and paused everything meanwhile; with the start-up objects set
    aside, about 10 ms (135,000 set aside)."""
    gc.collect()
    gc.freeze()


def schedule_as_batch() -> bool:
    """Have Linux schedule the calling thread, and every thread it starts from then on, as
    batch work (SCHED_BATCH; a user may switch to it from the usual policy, and the
    niceness stays): a batch thread that wakes does not preempt the thread running on its
    core (another process's or its own process's) but waits for a free core or the
    scheduler's tick; under steady load its share of the cores is about the same. For a
    worker, called before it starts any thread: the web answering a report, Redis, Tansu
    or the scheduler firing a deadline need not wait for it, nor do its handlers for its
    own consumer thread each time a fetch returns. False where the OS has no such policy;
    raises OSError where it refuses it (a sandbox that forbids the call)."""
    if not hasattr(os, "SCHED_BATCH"):
        return False
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    return True
