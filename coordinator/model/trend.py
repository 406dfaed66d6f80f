"""Are an incident's reports rising or falling? Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Direction = Literal["rising", "falling", "steady"]


@dataclass(frozen=True)
class Trend:
    """Reports in the last window and in the window before it."""

    recent: int
    before: int
    window_s: float

    @property
    def direction(self) -> Direction:
        """`rising` when the last window had more reports than the one before it."""
        if self.recent > self.before:
            return "rising"
        return "falling" if self.recent < self.before else "steady"

    def to_json(self) -> dict[str, object]:
        """As the API and the console show it."""
        return {"direction": self.direction, "recent": self.recent, "before": self.before,
                "window_s": self.window_s}


def trend(times: Iterable[float], now: float, window_s: float) -> Trend:
    """Count the report times (epoch seconds) in (now - window, now] and in the window
    before that; later times (a clock ahead of ours) count as recent."""
    recent = before = 0
    for t in times:
        if t > now - window_s:
            recent += 1
        elif t > now - 2 * window_s:
            before += 1
    return Trend(recent, before, window_s)
