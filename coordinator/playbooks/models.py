"""The playbook file format, version 1, as pydantic models."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from coordinator.events import Severity, Slug
from coordinator.languages import Tag

Channel = Literal["web", "sms", "email"]
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: object) -> float:
    """Seconds in `30s`, `10m`, `2h`, `1h30m` (or a plain number of seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    text = str(value).strip()
    match = _DURATION.match(text)
    if not text or match is None or not any(match.groups()):
        raise PydanticCustomError(
            "duration", '"{value}" is not a duration (use e.g. 30s, 10m, 2h, 1h30m)',
            {"value": value},
        )
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise PydanticCustomError("duration", '"{value}" must be longer than zero',
                                  {"value": value})
    return float(total)


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Which incidents a playbook handles."""

    kinds: list[Slug] = Field(min_length=1)
    min_severity: Severity = Severity.minor
    areas: list[Slug] = Field(default_factory=list)


class ChainLevel(_Strict):
    """One level of the approval chain."""

    department: Slug | None = None
    level: int = Field(default=1, ge=1)
    people: list[Slug] = Field(default_factory=list)
    within: Duration
    mode: Literal["any", "all"] = "any"
    reminders: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=list, description="fractions of `within` at which to remind, e.g. 0.5")


class Approval(_Strict):
    """Who approves, in what order, and what happens when nobody does."""

    department: Slug
    chain: list[ChainLevel] = Field(min_length=1)
    on_exhausted: Literal["hold", "duty_officer", "publish"] = "hold"
    publish_for: list[Annotated[str, StringConstraints(
        pattern=r"^(department|area|person):[a-z0-9]+(-[a-z0-9]+)*$")]] = Field(
        default_factory=list,
        description="`publish`: the reporter scopes (e.g. department:fire-police) whose "
                    "reports may be published when nobody answers; anyone else's are held")
    hold_alert_every: Duration = Field(default=600.0, description="`hold`: re-alert period")
    severity_factors: dict[Severity, Annotated[float, Field(gt=0, le=10)]] = Field(
        default_factory=dict, description="deadlines scaled by severity, e.g. extreme: 0.5")

    @model_validator(mode="after")
    def _publish_names_who(self) -> Approval:
        if self.on_exhausted == "publish" and not self.publish_for:
            raise PydanticCustomError(
                "publish_for", "on_exhausted: publish needs publish_for: the reporter scopes "
                "(e.g. department:fire-police) whose reports may go out unanswered")
        return self


class Audience(_Strict):
    """Who the playbook says a statement is for. Validated, but not read when sending:
    dispatch.audience picks subscribers by the incident's area and kind."""

    areas: Literal["incident", "city"] = "incident"
    topics: list[Slug] = Field(default_factory=list)


class WebTemplate(_Strict):
    """The public page's title and body."""

    title: str
    body: str


class SmsTemplate(_Strict):
    """The SMS text and how many segments it may take."""

    text: str
    segment_budget: int = Field(default=2, ge=1, le=10)


class EmailTemplate(_Strict):
    """The email's subject and plain-text body."""

    subject: str
    body: str


class LanguageTemplates(_Strict):
    """One language's templates, a channel each."""

    web: WebTemplate | None = None
    sms: SmsTemplate | None = None
    email: EmailTemplate | None = None


class FollowUp(_Strict):
    """The next update a publication promises: after the k-th statement, the k-th entry's
    `after`; past the last entry, its `every` (statements.promises)."""

    after: Duration
    note: str
    every: Duration | None = None


class Playbook(_Strict):
    """One playbook file."""

    version: Literal[1]
    id: Slug
    title: str
    description: str = ""
    priority: int = 0
    fallback: bool = False
    match: Match | None = None
    approval: Approval | None = None
    audience: Audience = Field(default_factory=Audience)
    channels: list[Channel] = Field(min_length=1)
    # BCP 47 tags; config/languages.yaml declares which the city speaks (a playbook may
    # cover only some: `loa playbooks validate` notes the others)
    languages: list[Tag] = Field(min_length=1)
    templates: dict[str, LanguageTemplates]
    follow_ups: list[FollowUp] = Field(default_factory=list)

    def template(self, language: str, channel: Channel
                 ) -> WebTemplate | SmsTemplate | EmailTemplate:
        """The template of one channel in one language; KeyError when there is none."""
        found = getattr(self.templates[language], channel)
        if found is None:
            raise KeyError(f"{language}.{channel}")
        return found  # type: ignore[no-any-return]
