"""What the web process holds for its lifetime, shared by its routers."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import Request

from coordinator.broker import Producer
from coordinator.city import City
from coordinator.keys import Keys
from coordinator.playbooks.models import Playbook
from coordinator.settings import Settings
from coordinator.state import Redis


class State:
    """What the web process holds for its lifetime."""

    def __init__(self, settings: Settings, redis: Redis, producer: Producer, city: City,
                 playbooks: dict[str, Playbook] | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.redis_prefix)
        self.producer = producer
        self.city = city
        self.playbooks = playbooks or {}


def web_state(request: Request) -> State:
    """The web process's state, from a request."""
    state: State = request.app.state.loa
    return state


async def wait_for_outcome(st: State, event_id: str, timeout_s: float = 10
                           ) -> dict[str, Any] | None:
    """What the worker stored for a decision or a duty officer's action (`accepted`,
    `message`), once it has; None when it did not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = await st.redis.get(st.keys.decision(event_id))
        if raw:
            outcome: dict[str, Any] = json.loads(raw)
            return outcome
        await asyncio.sleep(0.1)
    return None
