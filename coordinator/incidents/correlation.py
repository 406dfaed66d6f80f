"""Does a report join an open incident? Pure."""

from __future__ import annotations

from datetime import datetime

from coordinator.model.incident import OPEN


def joins(status: str | None, last_report_at: datetime | None, received_at: datetime,
          window_s: float) -> bool:
    """True when a report received at `received_at` joins the incident described."""
    if status not in OPEN or last_report_at is None:
        return False
    return abs((received_at - last_report_at).total_seconds()) <= window_s
