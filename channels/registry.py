"""The channels Loa knows, in one explicit mapping (SMS and email come in their own issue)."""

from __future__ import annotations

from channels.base import Channel
from channels.web import WebChannel
from coordinator.keys import Keys
from coordinator.state import Redis


def build_channels(redis: Redis, keys: Keys) -> dict[str, Channel]:
    """Every channel that can send now, by name."""
    return {WebChannel.name: WebChannel(redis, keys)}
