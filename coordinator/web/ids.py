"""The ids that appear in paths, each with its pattern: a path id is checked (422 naming
it) before it reaches a Redis key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

IncidentId = Annotated[str, Path(pattern=r"^INC-[0-9]{5,9}$")]
ApprovalId = Annotated[str, Path(pattern=r"^APR-[0-9]{5,9}-[0-9]{1,4}$")]
StatementId = Annotated[str, Path(pattern=r"^STM-[0-9]{5,9}-[0-9]{1,4}$")]
ReportId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{6,140}$")]
TipId = Annotated[str, Path(pattern=r"^TIP-[0-9a-f]{12}$")]
