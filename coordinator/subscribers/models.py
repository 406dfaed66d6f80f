"""A subscriber: who wants which official updates, where, in which language, on which channels."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from channels.contacts import InvalidContact, e164, email_address
from coordinator.events import Slug, utcnow

Role = Literal["resident", "press", "partner"]
Status = Literal["pending", "active", "opted_out"]
ALL_TOPICS = "*"


class Subscriber(BaseModel):
    """One person or organisation and what they asked for."""

    model_config = ConfigDict(extra="forbid")
    id: str = ""
    phone: str | None = None
    email: str | None = None
    language: Literal["vi", "en"] = "vi"
    areas: list[Slug] = Field(min_length=1)
    topics: list[str] = Field(default_factory=lambda: [ALL_TOPICS])
    channels: list[Literal["sms", "email"]] = Field(min_length=1)
    role: Role = "resident"
    status: Status = "active"
    consent_at: datetime = Field(default_factory=utcnow)
    consent_source: str = "cli"

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        try:
            return e164(value)
        except InvalidContact as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        try:
            return email_address(value)
        except InvalidContact as exc:
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _reachable(self) -> Subscriber:
        if "sms" in self.channels and not self.phone:
            raise ValueError("channel sms needs a phone")
        if "email" in self.channels and not self.email:
            raise ValueError("channel email needs an email")
        if not self.id:
            self.id = subscriber_id(self.phone, self.email)
        return self

    def contact(self, channel: str) -> str:
        """The address on one channel."""
        return (self.phone if channel == "sms" else self.email) or ""


def subscriber_id(phone: str | None, email: str | None) -> str:
    """Derived from the contact, so importing the same person twice finds the same record."""
    natural = phone or (email or "").lower()
    return "sub-" + hashlib.sha1(natural.encode()).hexdigest()[:16]
