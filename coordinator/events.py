"""Every event Loa puts on a topic, as pydantic models (schema version 1).

Values on the topics are the JSON of these models. The web process, the CLI and the worker
all use this one module, so producer and consumer cannot drift apart. ``schema_version``
lets a later version read old events.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION: Literal[1] = 1

Slug = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", min_length=1, max_length=64)
]
Interface = Literal["api", "cli", "web", "sms", "email", "worker", "system"]
ExhaustionRule = Literal["hold", "duty_officer", "publish"]
ReportId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{6,140}$")]
Claim = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
Spreading = Annotated[
    list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]],
    Field(max_length=20)]


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def _without_reply_code(data: Any) -> Any:
    """Events and stored requests written before issue 10 carried one unkeyed reply code
    shared by every approver: read them, and forget the code (it answers nothing now)."""
    if isinstance(data, dict) and "reply_code" in data:
        return {k: v for k, v in data.items() if k != "reply_code"}
    return data


def _request_before_sources(data: Any) -> Any:
    """A request made before issue 10 froze `publish` without asking who opened the
    incident (reports then needed no credential): it holds for a human decision instead."""
    if isinstance(data, dict) and "reply_code" in data and data.get("on_exhausted") == "publish":
        data = {**data, "on_exhausted": "hold"}
    return _without_reply_code(data)


class Severity(enum.StrEnum):
    """CAP 1.2 severities, in rising order."""

    minor = "minor"
    moderate = "moderate"
    severe = "severe"
    extreme = "extreme"

    @property
    def rank(self) -> int:
        """0 for minor up to 3 for extreme."""
        return list(Severity).index(self)


class Event(BaseModel):
    """Base of every event: versioned, immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        """The JSON value as it goes on a topic."""
        return self.model_dump_json().encode()


class ReportSource(BaseModel):
    """Who filed a report, as Loa authenticated them (not what the report says of itself)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    actor: str  # the audit actor: `token:NAME`, a person id, `account:NAME`, `operator:USER`
    role: str
    scope: str = ""  # `department:ID`, `area:CODE`, `person:ID`, or '' (the whole city)
    verified: bool = False  # an authenticated caller (a tip never is)


class Report(Event):
    """An incoming report from an authenticated department, locality or duty officer. Its
    `id` is namespaced by who filed it (`NAME:their-id`), so no client can take another's."""

    type: Literal["report"] = "report"
    id: ReportId
    kind: Slug
    severity: Severity
    area: Slug
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200)]
    details: Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)] = ""
    reporter: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    received_via: Interface = "api"
    received_at: datetime = Field(default_factory=utcnow)
    # A duty officer's choice: the incident to join, or the playbook (one no rule would pick).
    attach_to: str | None = None
    playbook: Slug | None = None
    source: ReportSource | None = None  # None in events from before sources: unverified
    # A drill: its incident runs the same path, but its messages say so, go only to
    # subscribers who opted into drills (or to the named test list), and are kept apart.
    exercise: bool = False
    drill_list: Slug | None = None  # with `exercise` only (reports.filing checks)
    # A report of false information (a kind with `claims: true` in config/kinds.yaml): what
    # is being said, and where it is spreading (links, or a screenshot described in words).
    claim: Claim = ""
    spreading: Spreading = Field(default_factory=list)

    @property
    def verified(self) -> bool:
        """True when an authenticated caller filed it."""
        return self.source is not None and self.source.verified

    @property
    def actor(self) -> str:
        """Who the audit trail names for this report (never its free-text `reporter`)."""
        return self.source.actor if self.source else "unverified source"

    def correlation_key(self) -> str:
        """Reports with the same key may join one incident (and share a partition); a drill
        never joins a real incident, nor a real report a drill. Claims go by what they say,
        whatever their kind and area: they all share one key (incidents.claims groups them)."""
        return ("claims" if self.claim else f"{self.kind}:{self.area}") + (
            ":exercise" if self.exercise else "")


class IncidentOpened(Event):
    """A report opened a new incident."""

    type: Literal["incident.opened"] = "incident.opened"
    incident_id: str
    report: Report
    at: datetime = Field(default_factory=utcnow)


class ReportAttached(Event):
    """A report joined an incident that was already open."""

    type: Literal["incident.report_attached"] = "incident.report_attached"
    incident_id: str
    report: Report
    at: datetime = Field(default_factory=utcnow)




class RenderedText(BaseModel):
    """One channel in one language of a draft or statement."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    channel: Literal["web", "sms", "email"]
    language: str
    title: str = ""
    body: str
    segments: int | None = None
    segment_budget: int | None = None


class Draft(Event):
    """The statement a playbook drafted for an incident, before approval."""

    type: Literal["draft"] = "draft"
    id: str
    incident_id: str
    playbook_id: str
    version: int
    texts: list[RenderedText]
    rendered_at: datetime = Field(default_factory=utcnow)
    msg_type: Literal["Alert", "Update", "Cancel"] = "Alert"
    references: list[str] = Field(default_factory=list)
    purpose: Literal["first", "edit", "update", "correction", "all_clear", "reselect"] = "first"
    author: str = ""
    note: str = ""
    fact: str = ""  # false information: the fact, its source and where the claim spread
    fact_source: str = ""  # (read when drafted) as the approver sees them: the statement
    spreading: list[str] = Field(default_factory=list)  # keeps them, whatever comes later


RedraftPurpose = Literal["edit", "update", "correction", "all_clear", "reselect"]


class RedraftRequested(Event):
    """A duty officer asks for a new draft version (it goes back for approval): their own
    wording (`texts`), or the playbook's (re-rendered, after re-running selection or with
    `playbook_id` when `reselect`)."""

    type: Literal["incident.redraft"] = "incident.redraft"
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{6,80}$")]
    incident_id: str
    purpose: RedraftPurpose
    playbook_id: str | None = None
    texts: list[RenderedText] | None = None
    note: Annotated[str, StringConstraints(max_length=2000)] = ""  # internal: audited only
    # public: opens every text of an update, correction or all-clear (`UPDATE: …`)
    change: Annotated[str, StringConstraints(strip_whitespace=True, max_length=160)] = ""
    # false information: the verified fact and its source, kept on the incident and
    # rendered into the playbook's correction (with `reselect`)
    fact: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] = ""
    fact_source: Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)] = ""
    actor: str
    via: Interface = "web"
    at: datetime = Field(default_factory=utcnow)


class IncidentClosed(Event):
    """A duty officer closes an incident: new reports open a new one; a pending request is
    withdrawn."""

    type: Literal["incident.closed"] = "incident.closed"
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{6,80}$")]
    incident_id: str
    reason: Annotated[str, StringConstraints(max_length=2000)] = ""
    actor: str
    via: Interface = "web"
    at: datetime = Field(default_factory=utcnow)


class IncidentMerged(Event):
    """A duty officer merges an incident into another (the same rumour in another language,
    two reports of one fire opened apart): it closes, and its reports count there."""

    type: Literal["incident.merged"] = "incident.merged"
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{6,80}$")]
    incident_id: str  # the one merged away
    into: str
    reason: Annotated[str, StringConstraints(max_length=2000)] = ""
    actor: str
    via: Interface = "web"
    at: datetime = Field(default_factory=utcnow)


IncidentEvent = Annotated[
    IncidentOpened | ReportAttached | RedraftRequested | IncidentClosed | IncidentMerged,
    Field(discriminator="type")]


class ChainLevelSnapshot(BaseModel):
    """One level of an approval chain, frozen when the request was created."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    level: int
    department: str
    department_level: int
    approvers: list[str]
    within_s: float
    mode: Literal["any", "all"] = "any"
    reminders: list[float] = Field(default_factory=list)


class ApprovalRequest(Event):
    """Who must approve a draft, by when; the chain is a snapshot of the playbook's."""

    type: Literal["approval.requested"] = "approval.requested"
    id: str
    incident_id: str
    draft_id: str
    playbook_id: str
    severity: Severity
    chain: list[ChainLevelSnapshot]
    level: int = 1
    deadline: datetime
    on_exhausted: ExhaustionRule
    hold_alert_every_s: float = 600.0
    created_at: datetime = Field(default_factory=utcnow)

    _legacy = model_validator(mode="before")(_request_before_sources)


PromptKind = Literal["request", "reminder", "moved_up", "hold_alert", "sign_off", "decided"]


class ApprovalPrompt(Event):
    """A message to one person about an approval request: everything an SMS, an email
    or the web inbox needs to show it (the channel is the person's preferred one)."""

    type: Literal["approval.prompt"] = "approval.prompt"
    id: str
    kind: PromptKind
    approval_id: str
    incident_id: str
    level: int
    person_id: str
    person_name: str
    channel: Literal["sms", "email", "web"]
    phone: str
    email: str
    deadline: datetime | None
    text: str  # no reply code: the SMS adds the person's own code when it is sent
    at: datetime = Field(default_factory=utcnow)

    _legacy = model_validator(mode="before")(_without_reply_code)


ApprovalEvent = Annotated[ApprovalRequest | ApprovalPrompt, Field(discriminator="type")]


class Decision(Event):
    """An approver's answer to an approval request."""

    type: Literal["decision"] = "decision"
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{6,80}$")]
    approval_id: str
    approver_id: str
    verdict: Literal["approve", "reject"]
    comment: str = ""
    # "edit and approve": the approver's wording replaces the draft's for these texts
    texts: list[RenderedText] | None = None
    via: Interface = "cli"
    # The local operator deciding for an approver who asked them to (by phone, in person):
    # recorded with the reason; the approver's authority is what the chain checks.
    acted_by: str = ""
    acted_because: Annotated[str, StringConstraints(max_length=500)] = ""
    at: datetime = Field(default_factory=utcnow)


class Statement(Event):
    """An approved statement, ready for the channels (CAP msgType Alert first)."""

    type: Literal["statement"] = "statement"
    id: str
    incident_id: str
    approval_id: str
    draft_id: str
    playbook_id: str
    kind: str
    severity: Severity
    area: str
    msg_type: Literal["Alert", "Update", "Cancel"] = "Alert"
    references: list[str] = Field(default_factory=list)
    texts: list[RenderedText]
    approved_by: list[str]
    approved_at: datetime
    approval_basis: Literal["approver", "duty_officer", "exhausted_publish"] = "approver"
    exercise: bool = False  # a drill's statement: CAP status Exercise, kept off the public list
    drill_list: str | None = None  # a drill's test list, its whole audience
    fact: str = ""  # false information: the fact this correction states (from its draft)
    fact_source: str = ""
    spreading: list[str] = Field(default_factory=list)  # where the claim spread (its draft's)


class DeliveryRequest(Event):
    """A message to hand to the SMS or email channel: an approval prompt, a statement to a
    subscriber, a confirmation code. `id` is deterministic: a replay sends nothing new."""

    type: Literal["delivery.request"] = "delivery.request"
    id: str
    channel: Literal["sms", "email"]
    recipient: str
    text: str
    subject: str = ""
    html: str | None = None
    language: str = ""
    unsubscribe_url: str | None = None
    purpose: Literal["prompt", "statement", "confirmation", "alert"] = "prompt"  # alert: a surge
    incident_id: str | None = None
    statement_id: str | None = None
    subscriber_id: str | None = None
    person_id: str | None = None  # an approval prompt's person
    answer_for: str | None = None  # a prompt about a pending approval: the approval's id
    at: datetime = Field(default_factory=utcnow)


class DeliveryBatch(Event):
    """Some hundreds of a statement's deliveries on one channel: batch `number` of its
    dispatch ledger (``dispatch.ledger``), whose subscriber ids are kept in Redis. The event
    only points at them: a lost event is found again in the ledger and sent again."""

    type: Literal["delivery.batch"] = "delivery.batch"
    statement_id: str
    incident_id: str
    channel: Literal["sms", "email"]
    number: int = Field(ge=0)


class AuditEvent(Event):
    """Who did what, when, through which interface."""

    type: Literal["audit"] = "audit"
    at: datetime = Field(default_factory=utcnow)
    actor: str
    action: str
    interface: Interface
    incident_id: str | None = None
    subject: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class DeadLetter(Event):
    """A message that could not be handled, with why; the worker went on."""

    type: Literal["dead_letter"] = "dead_letter"
    topic: str
    key: str | None
    value: str
    reason: str
    at: datetime = Field(default_factory=utcnow)
