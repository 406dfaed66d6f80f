"""An event off the broker, decoded: its model, or BadEvent naming what is wrong with it
(the agent sends it to `dead-letters` with that reason)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from coordinator.errors import BadEvent
from coordinator.events import ApprovalEvent, IncidentEvent

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
_incident_events: TypeAdapter[IncidentEvent] = TypeAdapter(IncidentEvent)
_approval_events: TypeAdapter[ApprovalEvent] = TypeAdapter(ApprovalEvent)


def decode(model: type[M], value: bytes) -> M:
    """The event, or BadEvent naming what is wrong with it."""
    return _checked(model.model_validate_json, value)


def decode_approval_event(value: bytes) -> ApprovalEvent:
    """An approval request or prompt, or BadEvent."""
    return _checked(_approval_events.validate_json, value)


def decode_incident_event(value: bytes) -> IncidentEvent:
    """An incident event of any type, or BadEvent."""
    return _checked(_incident_events.validate_json, value)


def _checked(validate: Callable[[bytes], T], value: bytes) -> T:
    try:
        return validate(value)
    except ValidationError as exc:
        raise BadEvent(describe(exc)) from exc


def describe(exc: ValidationError) -> str:
    """`field: message; ...` for the first few errors."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(value)'}: {err['msg']}"
        for err in exc.errors(include_url=False)[:5]
    )

