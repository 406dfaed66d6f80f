"""Who may do what: the one policy of Loa, as a table. Pure.

Every web route and every CLI command that acts names one `Action` and asks
`decide(principal, action, ...)`; nothing else grants access. The table below is
the whole policy: for each action, the roles that may take it, and whether the
principal's scope (a department, an area, a person) narrows it.

Who is calling is a `Principal`: an API token's holder, a logged-in console
account, the local operator at the CLI (recorded with a reason), or nobody
(`anonymous`). The principal's `actor` is what the audit trail records.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal


class Role(enum.StrEnum):
    """What a caller is to Loa."""

    anonymous = "anonymous"
    reporter = "reporter"  # a department's or locality's system or staff filing reports
    duty_officer = "duty_officer"
    approver = "approver"  # bound to one person of config/
    translator = "translator"  # adds and corrects a draft's versions in the city's other languages
    press = "press"  # published statements and the press archive, by API
    partner = "partner"  # machine reads of published statements and feeds
    monitor = "monitor"  # /metrics, health details, the API schema
    admin = "admin"


class Action(enum.StrEnum):
    """Everything a caller can ask Loa to do."""

    public_read = "public.read"  # public pages, feeds, CAP, live updates, static files
    subscribe = "subscribe"  # join / leave as a resident (proved by a code or a link)
    tip_file = "tip.file"  # an unverified tip: never publishable without a human decision
    login = "login"
    signed_link = "signed_link"  # the signed link is the credential (approval e-mails, leave)
    provider_webhook = "provider_webhook"  # the provider's signature is the credential
    statement_api = "statement.api"  # published statements as JSON
    report_file = "report.file"
    incident_read = "incident.read"  # incidents, timelines, tips, drafts
    incident_steer = "incident.steer"  # new versions, close, attach, reselect
    draft_translate = "draft.translate"  # a draft's versions in languages other than the city's
    approval_read = "approval.read"  # the list of approval requests
    inbox_use = "inbox.use"  # see and decide my requests
    ops_read = "ops.read"  # /metrics, /docs, /openapi.json, health details
    token_manage = "token.manage"
    account_manage = "account.manage"
    subscriber_admin = "subscriber.admin"  # contacts: import, export, look up
    audit_verify = "audit.verify"  # read the whole audit trail to check its chain
    audit_prune = "audit.prune"  # drop the trail up to a signed checkpoint


EVERYONE = frozenset(Role)
STAFF = frozenset({Role.duty_officer, Role.admin})

# The policy. Read it as: action -> the roles that may take it.
POLICY: Mapping[Action, frozenset[Role]] = {
    Action.public_read: EVERYONE,
    Action.subscribe: EVERYONE,
    Action.tip_file: EVERYONE,
    Action.login: EVERYONE,
    Action.signed_link: EVERYONE,
    Action.provider_webhook: EVERYONE,
    Action.statement_api: frozenset({Role.press, Role.partner, *STAFF}),
    Action.report_file: frozenset({Role.reporter, *STAFF}),
    Action.incident_read: STAFF,
    Action.incident_steer: STAFF,
    Action.draft_translate: frozenset({Role.translator, *STAFF}),
    Action.approval_read: STAFF,
    Action.inbox_use: frozenset({Role.approver, *STAFF}),
    Action.ops_read: frozenset({Role.monitor, Role.admin}),
    Action.token_manage: frozenset({Role.admin}),
    Action.account_manage: frozenset({Role.admin}),
    Action.subscriber_admin: frozenset({Role.admin}),
    Action.audit_verify: frozenset({Role.monitor, Role.admin}),
    Action.audit_prune: frozenset({Role.admin}),
}

# How a refusal names an action and the roles, in plain words.
WHAT: Mapping[Action, str] = {
    Action.public_read: "read public pages", Action.subscribe: "subscribe",
    Action.tip_file: "send a tip", Action.login: "log in",
    Action.signed_link: "use a signed link", Action.provider_webhook: "call a webhook",
    Action.statement_api: "read statements through the API",
    Action.report_file: "file reports", Action.incident_read: "see incidents",
    Action.incident_steer: "steer incidents", Action.approval_read: "list approval requests",
    Action.draft_translate: "translate drafts",
    Action.inbox_use: "use the approval inbox", Action.ops_read: "read metrics and the API schema",
    Action.token_manage: "manage API tokens", Action.account_manage: "manage accounts",
    Action.subscriber_admin: "see subscribers' contacts",
    Action.audit_verify: "verify the audit trail", Action.audit_prune: "prune the audit trail",
}
PLURAL: Mapping[Role, str] = {
    Role.anonymous: "anyone", Role.reporter: "reporters", Role.duty_officer: "duty officers",
    Role.approver: "approvers", Role.translator: "translators", Role.press: "the press",
    Role.partner: "partners",
    Role.monitor: "monitors", Role.admin: "admins",
}

# Actions whose principal's area scope narrows what they may touch (the area of the report).
AREA_SCOPED = frozenset({Action.report_file})

PrincipalKind = Literal["anonymous", "token", "session", "operator"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: their role, scope and the name the audit trail records."""

    kind: PrincipalKind
    username: str  # token name, account username, local user, or "anonymous"
    role: Role
    name: str = ""  # for people: their display name
    person_id: str = ""  # approvers (and people-bound accounts): the person in config/
    department: str = ""  # scope: a department
    area: str = ""  # scope: an area and what lies inside it
    reason: str = ""  # the local operator's stated reason
    on_behalf_of: str = ""  # the local operator acting for this person
    credential: str = ""  # which of the tokens given this name ('' for the first)

    @property
    def actor(self) -> str:
        """The audit actor: `token:NAME`, the person, `account:NAME`, `operator:USER`."""
        if self.kind == "token":
            return f"token:{self.username}"
        if self.kind == "operator":
            return f"operator:{self.username}"
        if self.kind == "session":
            return self.person_id or f"account:{self.username}"
        return "anonymous"

    @property
    def verified(self) -> bool:
        """A known caller (anything but anonymous) whose words may open an incident."""
        return self.kind != "anonymous" and self.role != Role.anonymous

    @property
    def can_run_incidents(self) -> bool:
        """Duty officers and admins steer incidents."""
        return self.role in STAFF

    @property
    def scope(self) -> str:
        """`department:ID`, `area:CODE`, `person:ID` or '' (the whole city)."""
        for kind, value in (("department", self.department), ("area", self.area),
                            ("person", self.person_id)):
            if value:
                return f"{kind}:{value}"
        return ""


ANONYMOUS = Principal(kind="anonymous", username="anonymous", role=Role.anonymous)


@dataclass(frozen=True)
class Verdict:
    """Whether an action is allowed, and why not (a message for the caller)."""

    allowed: bool
    why: str = ""
    status: int = 200  # 401 when a credential would help, 403 when it would not


def decide(principal: Principal, action: Action, area: str | None = None,
           area_contains: Mapping[str, list[str]] | None = None) -> Verdict:
    """May `principal` take `action` (on something in `area`)? `area_contains` maps an area
    to the areas containing it (itself first), for area-scoped principals."""
    if principal.role not in POLICY[action]:
        if not principal.verified:
            return Verdict(False, f"to {WHAT[action]} you need a credential (an API token or "
                                  "a console login)", 401)
        who = ", ".join(PLURAL[r] for r in Role if r in POLICY[action])
        return Verdict(False, f"{principal.actor} ({principal.role.value}) may not "
                              f"{WHAT[action]}: that is for {who}", 403)
    if action in AREA_SCOPED and principal.area and area is not None:
        containing = (area_contains or {}).get(area, [area])
        if principal.area not in containing:
            return Verdict(False, f"{principal.actor} may act only in {principal.area} and "
                                  f"the areas inside it, not in {area}", 403)
    return Verdict(True)


def may_raise_severity(source_scope: str, area_path: Sequence[str]) -> bool:
    """Whether a verified report filed under `source_scope` may raise the severity of an
    incident whose area, with the areas containing it, is `area_path`. A false claim's
    reports join its one incident wherever they were filed; one filed by an area-scoped
    reporter outside that incident's area is recorded, but does not raise it (nor, through
    it, the exhaustion rule's trust)."""
    if not source_scope.startswith("area:"):
        return True
    return source_scope.removeprefix("area:") in area_path


def may_publish_on_exhaustion(grants: list[str], source_scope: str, source_verified: bool
                              ) -> bool:
    """Whether a playbook's `publish` exhaustion rule applies to an incident opened by a
    report from `source_scope`: only for an authenticated reporter whose scope the playbook
    names in `grants` (e.g. `department:fire-police`)."""
    return source_verified and bool(source_scope) and source_scope in grants
