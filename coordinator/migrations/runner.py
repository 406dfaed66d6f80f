"""Running the pending steps: in order, each recorded in the version key only once done, so
a run that stops midway resumes at the step it was in (which skips what it had done)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from coordinator.keys import Keys
from coordinator.migrations.step import Step
from coordinator.migrations.version import Layout, pending, read_layout, stamp
from coordinator.state import Redis


@dataclass(frozen=True)
class StepOutcome:
    """One step's changes: made when the run applied, else what it would make."""

    name: str
    summary: str
    changes: list[str]


@dataclass(frozen=True)
class Migration:
    """A run of `loa migrate`: the layout found, the target, and each pending step's
    outcome; `applied` when the changes were made (else a dry run), `stamped_fresh` when an
    empty Redis was stamped."""

    found: Layout
    target: int
    applied: bool
    steps: list[StepOutcome] = field(default_factory=list)
    stamped_fresh: bool = False

    def as_dict(self) -> dict[str, object]:
        """For `loa migrate --json`."""
        return {"version": self.found.version, "stamped": self.found.stamped,
                "target": self.target, "applied": self.applied,
                "stamped_fresh": self.stamped_fresh,
                "steps": [{"name": s.name, "summary": s.summary, "changes": s.changes}
                          for s in self.steps]}


async def migrate(redis: Redis, keys: Keys, apply: bool, steps: Sequence[Step], current: int
                  ) -> Migration:
    """Run (apply) or only look at (dry run) the steps from the stored layout to `current`.
    An empty Redis is stamped `current` when applying. Raises LayoutError for a layout
    newer than `current` (nothing is touched)."""
    found = await read_layout(redis, keys)
    todo = pending(found, steps, current)
    if found.version is None:
        fresh = apply and await stamp(redis, keys, current, only_if_absent=True)
        return Migration(found, current, apply, stamped_fresh=fresh)
    outcomes: list[StepOutcome] = []
    for step in todo:
        changes = await step.work(redis, keys, apply)
        if apply:
            await stamp(redis, keys, step.target)
        outcomes.append(StepOutcome(step.name, step.summary, changes))
    return Migration(found, current, apply, outcomes)
