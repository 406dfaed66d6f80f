"""The layout Loa keeps in Redis has a version, and each change of layout comes with a step
that takes data from one version to the next (`loa migrate`).

Versions:

1. the layout of the release before versions were kept (commit 5366393): no version key.
2. the same keys and values; the contact index (phone or email -> subscriber id) repaired
   of entries left by records that lost that contact before issue 10 (see v1_to_v2.py).
   Subscriber ids are kept as they are, SHA-1-derived ones included.
3. the compact subscriber registry (subscribers.store): numbered subscribers, records and
   contacts in hash buckets, indexes and incidents' reached subscribers as bitmaps; ids
   kept as they were (see v2_to_v3.py).

The version lives under ``Keys.layout_version()``. No version key on a Redis holding Loa
data means version 1; no version key on an empty Redis is a fresh install, stamped
:data:`CURRENT` (see version.py)."""

from __future__ import annotations

from coordinator.migrations.step import Step
from coordinator.migrations.v1_to_v2 import STEP as V1_TO_V2
from coordinator.migrations.v2_to_v3 import STEP as V2_TO_V3

CURRENT = 3
"""The layout this code reads and writes."""
OLDEST_RUNNABLE = 3
"""The oldest layout this code can run on: before 3, subscribers are not numbered, so a
worker would find no audience and a new subscriber would get a second record."""

STEPS: tuple[Step, ...] = (V1_TO_V2, V2_TO_V3)
"""Every step, in order: STEPS[i] goes from version i + 1 to i + 2."""

__all__ = ["CURRENT", "OLDEST_RUNNABLE", "STEPS", "Step"]
