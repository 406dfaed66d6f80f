"""Which layout a Redis is in: read from its version key, or inferred when there is none;
what to do about it (pure); and stamping it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.migrations.step import Step
from coordinator.state import Redis

UNVERSIONED = 1
"""The layout of data written before versions were kept (the release at commit 5366393)."""


class LayoutError(LoaError):
    """The Redis layout is newer than this Loa knows, or its version key is not a number."""


Verdict = Literal["fresh", "current", "older", "newer"]


@dataclass(frozen=True)
class Layout:
    """What a Redis holds: its version (None for an empty Redis) and whether that came from
    the version key (else inferred)."""

    version: int | None
    stamped: bool

    def verdict(self, current: int) -> Verdict:
        """Fresh (empty), current, older or newer than `current`. Pure."""
        if self.version is None:
            return "fresh"
        if self.version == current:
            return "current"
        return "older" if self.version < current else "newer"

    def describe(self, current: int) -> str:
        """One line for people: the stored version against `current`. Pure."""
        if self.version is None:
            return f"Redis layout: empty (a fresh install is stamped version {current})"
        where = "" if self.stamped else " (no version key: written before versions were kept)"
        return f"Redis layout: version {self.version}{where}; this Loa: version {current}"


def advice(layout: Layout, current: int) -> str:
    """What an operator should do about `layout`, in one sentence; "" when nothing. Pure."""
    verdict = layout.verdict(current)
    if verdict == "older":
        return (f"the Redis layout is version {layout.version}, older than this Loa's "
                f"{current}: run `loa migrate --apply` (see docs/upgrading.md)")
    if verdict == "newer":
        return (f"the Redis layout is version {layout.version}, newer than this Loa knows "
                f"({current}): a newer release wrote it; upgrade Loa, do not run this one")
    return ""


def pending(layout: Layout, steps: Sequence[Step], current: int) -> list[Step]:
    """The steps that take `layout` to `current`, in order (none for a fresh or current
    layout). Raises LayoutError for a newer layout, or when `steps` has a gap. Pure."""
    verdict = layout.verdict(current)
    if verdict == "newer":
        raise LayoutError(advice(layout, current))
    if layout.version is None or verdict == "current":
        return []
    by_source = {step.source: step for step in steps}
    missing = [v for v in range(layout.version, current) if v not in by_source]
    if missing:
        raise LayoutError(f"no migration step from version(s) {missing} to {current}")
    return [by_source[v] for v in range(layout.version, current)]


def parse_version(raw: str) -> int:
    """The stored version as a number; raises LayoutError for anything else. Pure."""
    if not raw.isdigit() or int(raw) < 1:
        raise LayoutError(f"the Redis layout version key ({raw!r}) is not a version number")
    return int(raw)


async def read_layout(redis: Redis, keys: Keys) -> Layout:
    """The layout of the data under `keys.prefix`. Raises LayoutError for a garbled key."""
    raw: str | None = await redis.get(keys.layout_version())
    if raw is not None:
        return Layout(parse_version(raw), stamped=True)
    return Layout(UNVERSIONED if await holds_loa_data(redis, keys) else None, stamped=False)


async def holds_loa_data(redis: Redis, keys: Keys) -> bool:
    """Whether any key under the prefix exists, besides the version key."""
    pattern = literal_pattern(keys.prefix) + ":*"
    async for key in redis.scan_iter(match=pattern, count=1000):
        if key != keys.layout_version():
            return True
    return False


def literal_pattern(text: str) -> str:
    """`text` as a literal in a SCAN pattern (glob characters escaped). Pure."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


async def stamp(redis: Redis, keys: Keys, version: int, only_if_absent: bool = False) -> bool:
    """Record the layout version; with `only_if_absent`, only where none is recorded (a
    fresh install: two processes starting at once agree). True when written."""
    return bool(await redis.set(keys.layout_version(), str(version), nx=only_if_absent))
