"""A worker's start: faust's table manager without the second it waits for tables declared
late, since Loa keeps its state in Redis and declares none
(coordinator.faust_kafka.TablelessManager)."""

from __future__ import annotations

import asyncio
import inspect
import textwrap
import uuid
from typing import Any

from faust.tables import TableManager

from coordinator.app import create_app
from coordinator.city import load_city
from coordinator.faust_kafka import TablelessManager
from coordinator.keys import Keys
from coordinator.playbooks.loader import load_playbooks
from coordinator.runtime import Runtime
from coordinator.settings import Settings
from coordinator.state import connect
from tests.conftest import FIXTURE_MAP


def test_faust_still_waits_a_second_then_starts_what_the_manager_starts_without_it() -> None:
    """The installed faust's own start: the wait, then the two steps the manager takes
    without it. A faust that starts its tables otherwise fails here, not in production."""
    body = textwrap.dedent(inspect.getsource(TableManager.on_start)).splitlines()[2:]
    assert [line.strip() for line in body] == [
        "await self.sleep(1.0)", "if not self.should_stop:",
        "await self._update_channels()", "await self.recovery.start()"]


async def test_the_worker_app_declares_no_table_and_starts_without_the_wait() -> None:
    settings = Settings(_env_file=None, kafka_url="kafka://127.0.0.1:9",  # type: ignore[call-arg]
                        redis_url="redis://127.0.0.1:9", secret_key="unit-test-secret")
    city = load_city(settings.config_dir, FIXTURE_MAP)
    rt = Runtime(settings=settings, redis=connect(settings.redis_url or ""),
                 keys=Keys(f"t{uuid.uuid4().hex[:8]}"), city=city,
                 playbooks=load_playbooks(settings.playbooks_dir, city))
    manager = create_app(settings, rt).tables
    assert isinstance(manager, TablelessManager) and len(manager) == 0
    steps: list[str] = []

    async def step(name: str, *args: Any) -> None:
        steps.append(name)

    async def sleep(seconds: float) -> None:
        steps.append(f"sleep {seconds}")
        await asyncio.sleep(0)

    manager.sleep = lambda s: sleep(s)
    manager._update_channels = lambda: step("channels")
    manager.recovery.start = lambda: step("recovery")
    await manager.on_start()
    assert steps == ["channels", "recovery"]
    await rt.redis.aclose()
