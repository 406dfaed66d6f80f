"""What changed on the public pages, for the web processes' live pages (web.live)."""

from __future__ import annotations

from coordinator.keys import Keys
from coordinator.state import Pipeline

PUBLIC_EVENTS_KEPT = 1000
"""About how many public changes the stream keeps: a live page that reconnects after more
than this many reloads its list instead of catching up."""


def queue_public_event(pipe: Pipeline, keys: Keys, change: str, statement_id: str) -> None:
    """Inside MULTI: tell the web processes what changed on the public pages (`published`:
    the statement is new or its promise changed; `withdrawn`), so their live pages show it
    at once (web.live, which ignores drills' statements)."""
    pipe.xadd(keys.public_events(), {"change": change, "statement": statement_id},
              maxlen=PUBLIC_EVENTS_KEPT, approximate=True)
