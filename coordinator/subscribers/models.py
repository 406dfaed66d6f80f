"""A subscriber: who wants which official updates, where, in which language, on which channels."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from channels.contacts import InvalidContact, e164, email_address
from coordinator.events import Slug, utcnow
from coordinator.languages import TAG_PATTERN

Role = Literal["resident", "press", "partner"]
Status = Literal["pending", "active", "opted_out"]
ALL_TOPICS = "*"


class Subscriber(BaseModel):
    """One person or organisation and what they asked for."""

    model_config = ConfigDict(extra="forbid")
    # Says nothing of the contact (`sub-n<number>`, or an older random one); "" until the
    # registry gives it one (or finds the record that already has this phone or email).
    id: str = Field(default="", pattern=r"^(sub-[0-9a-z-]{1,64})?$")
    phone: str | None = None
    email: str | None = None
    # a BCP 47 tag the city declares (config/languages.yaml; checked where a subscriber comes
    # in: CSV, CLI, web form, SMS); "" reads the city's default language
    language: str = Field(default="", pattern=f"({TAG_PATTERN})|^$")
    areas: list[Slug] = Field(min_length=1)
    topics: list[str] = Field(default_factory=lambda: [ALL_TOPICS])
    channels: list[Literal["sms", "email"]] = Field(min_length=1)
    role: Role = "resident"
    drills: bool = False  # also receives exercises' messages (marked as such)
    lists: list[Slug] = Field(default_factory=list)  # test lists a drill may target by name
    status: Status = "active"
    consent_at: datetime = Field(default_factory=utcnow)
    consent_source: str = "cli"

    @field_validator("areas", "topics", "channels", "lists")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        # `sms;sms` asks for SMS, once: a channel listed twice made two deliveries of one
        # id, which one claim took as one and two hand-overs sent.
        return list(dict.fromkeys(value))

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
        return self

    def contact(self, channel: str) -> str:
        """The address on one channel."""
        return (self.phone if channel == "sms" else self.email) or ""

    def contact_keys(self) -> list[str]:
        """The phone and the email as the contact index knows them (email in lower case)."""
        return [c for c in (self.phone, (self.email or "").lower()) if c]
