"""What a migration step is: one change of the Redis layout, from one version to the next."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from coordinator.keys import Keys
from coordinator.state import Redis

# (redis, keys, apply) -> one line per change made (apply) or that would be made (dry run).
StepWork = Callable[[Redis, Keys, bool], Awaitable[list[str]]]


@dataclass(frozen=True)
class Step:
    """Takes the layout from version `source` to `source + 1`.

    `work` must be idempotent and safe to re-run after a crash midway: it looks at the data
    and changes only what is not done yet, so a second run reports no change. The runner
    records the new version only after `work` has returned."""

    source: int
    summary: str
    work: StepWork

    @property
    def target(self) -> int:
        """The version the layout is in once this step is done."""
        return self.source + 1

    @property
    def name(self) -> str:
        """`v1_to_v2`, as the step's module is named."""
        return f"v{self.source}_to_v{self.target}"
