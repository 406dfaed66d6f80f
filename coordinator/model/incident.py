"""An incident as Loa keeps it."""

from __future__ import annotations


def ids_for(incident_id: str, version: int) -> tuple[str, str, str]:
    """(draft, approval, statement) ids of a draft version: DRF-00042-1, APR-00042-1, ..."""
    number = incident_id.removeprefix("INC-")
    return (f"DRF-{number}-{version}", f"APR-{number}-{version}", f"STM-{number}-{version}")
