"""The errors Loa raises on purpose: one tree, drawn here with where each class lives.

Every error the coordinator raises on purpose is a :class:`LoaError`; a test
(tests/unit/test_error_tree.py) keeps it so. Classes defined elsewhere are in (brackets)::

    LoaError
    ├── ConfigError              config/ or the environment is unreadable or inconsistent
    ├── PlaybookError            a playbook (or the set of them) does not validate
    ├── TemplateRenderError      a draft template failed to render
    ├── BadEvent                 a message on a topic is not a valid event (-> dead-letters)
    ├── BrokerUnavailable        the report could not be put on the broker
    ├── Contention               a compare-and-set gave up: its keys kept changing (state.transact)
    ├── IncidentTransitionError  an incident asked to move where its status does not lead
    ├── LayoutError              (migrations.version) Redis holds a layout this Loa cannot read
    ├── AccountError             (accounts) an account cannot be made as asked
    ├── TokenError               (tokens) an API token cannot be made as asked
    ├── SealError                (second_factor) a sealed TOTP secret does not open
    ├── BadSignature             (signing) a signed token was changed or is not ours
    ├── InvalidLink              (approvals.links) an approval link: forged, garbled, expired
    ├── InvalidConfirmLink       (subscribers.proofs) an email confirmation link, likewise
    ├── SubscriberConflict       (subscribers.registry) that phone or email is someone else's
    ├── OutcomesNotWritten       (dispatch.outcome_writes) the writer stopped before writing them
    ├── LoginRequired            (web.security) a page needs a login (-> redirect to /login)
    └── BodyTooLarge             (web.body_limit) a request body past the limit (-> 413)

The channels package is a leaf that knows nothing of the coordinator, so its errors have
their own root (channels/base.py)::

    ChannelError
    ├── DeliveryError            a message the provider did not take
    │   ├── PermanentDeliveryError   do not retry (invalid recipient, refused content)
    │   │   └── MessageTooLong       longer than the channel takes (refused before sending)
    │   ├── TransientDeliveryError   retry later (rate limited, provider down)
    │   └── Withdrawn                no longer wanted when its turn came
    ├── ChannelConfigError       a channel cannot be built from what it was given
    │   └── SmsConfigError       (channels.sms) Twilio credentials or sender missing
    ├── InvalidContact           (channels.contacts) not a phone number / email address
    └── InvalidWebhook           (channels.twilio_webhooks) a form that is not Twilio's

Channel errors are translated at the boundary: in coordinator/dispatch/deliveries.py a
DeliveryError becomes a delivery's outcome (skipped, failed, gave up) and in
coordinator/app.py handle_safely a Permanent one dead-letters the event and a Transient
one is retried; InvalidWebhook is answered 400 in coordinator/web/hooks.py; InvalidContact
is turned into the caller's own answer where a contact is read (subscribers/,
web/subscribe.py, web/hooks.py, city.py, cli/subscribers.py).

Deliberately *not* in the tree: KeyError for an id that is not there (planner, decisions:
dead-letters the event), ValueError from pydantic validators (pydantic needs it) and from
queries.window (a cursor that does not parse), and the RuntimeError of embedded.py when a
`loa up` service does not start.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable


class LoaError(Exception):
    """Root of every error Loa raises on purpose."""


class ConfigError(LoaError):
    """config/ cannot be loaded or is inconsistent."""


class PlaybookError(LoaError):
    """A playbook does not validate; ``problems`` holds one `file:line: field: why` each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class TemplateRenderError(LoaError):
    """A template of a playbook failed to render; ``loc`` is its place in the playbook."""

    def __init__(self, message: str, loc: tuple[str, ...] = ()) -> None:
        self.loc = loc
        super().__init__(message)


class BadEvent(LoaError):
    """A message on a topic could not be decoded into its event model, or was refused for
    good. `after_dead_letter`: what follows once its dead letter is recorded (a report
    refused for good is no longer kept for resending), or None."""

    after_dead_letter: Callable[[], Awaitable[None]] | None = None


class BrokerUnavailable(LoaError):
    """The broker did not acknowledge a message in time."""


class Contention(LoaError):
    """A compare-and-set (state.transact) gave up: the keys it watched kept changing."""


class IncidentTransitionError(LoaError):
    """An incident was asked to move to a status its current one does not lead to."""

    def __init__(self, incident_id: str, status: str, transition: str) -> None:
        self.incident_id = incident_id
        self.status = status
        self.transition = transition
        super().__init__(f"{incident_id} is {status}: it cannot be {transition}")
