"""What the web process holds for its lifetime, shared by its routers: the one runtime
(coordinator.runtime, built by `build_runtime`) and the broker producer."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from coordinator.broker import Producer
from coordinator.city import City
from coordinator.dispatch.status_callbacks import StatusCallbacks
from coordinator.keys import Keys
from coordinator.playbooks.models import Playbook
from coordinator.reports.filing import Handoffs
from coordinator.runtime import Runtime
from coordinator.settings import Settings
from coordinator.state import Redis


@dataclass(frozen=True)
class State:
    """The web process's runtime and its producer. The runtime's parts are read through
    it (`st.redis`, `st.keys`, ...): they are the runtime's, not copies."""

    rt: Runtime
    producer: Producer
    status_callbacks: StatusCallbacks  # applied in batches (dispatch.status_callbacks)
    handoffs: Handoffs  # accepted reports on their way to the broker

    @property
    def settings(self) -> Settings:
        """The process's settings."""
        return self.rt.settings

    @property
    def redis(self) -> Redis:
        """The process's Redis client."""
        return self.rt.redis

    @property
    def keys(self) -> Keys:
        """Redis key names under the configured prefix."""
        return self.rt.keys

    @property
    def city(self) -> City:
        """The city (config/)."""
        return self.rt.city

    @property
    def playbooks(self) -> dict[str, Playbook]:
        """The playbooks by name (playbooks/)."""
        return self.rt.playbooks


def web_state(request: Request) -> State:
    """The web process's state, from a request."""
    state: State = request.app.state.loa
    return state
