"""Every Redis key Loa uses, in one place. All start with the configured prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (``LOA_REDIS_PREFIX``)."""

    prefix: str

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # reports in
    def outbox(self) -> str:
        """Hash report id -> report JSON, kept until the pipeline has taken the report in."""
        return self._k("outbox")

    def outbox_times(self) -> str:
        """Sorted set report id -> when it was last put on the broker."""
        return self._k("outbox", "sent")

    def report(self, report_id: str) -> str:
        """The report as taken in, with the incident it went to."""
        return self._k("report", report_id)

    # incidents
    def incident_seq(self) -> str:
        """Counter behind incident ids."""
        return self._k("seq", "incident")

    def incident(self, incident_id: str) -> str:
        """Hash: the incident's current state."""
        return self._k("incident", incident_id)

    def incidents(self) -> str:
        """Sorted set incident id -> opened time."""
        return self._k("incidents")

    def timeline(self, incident_id: str) -> str:
        """List of the incident's timeline entries (JSON), oldest first."""
        return self._k("incident", incident_id, "timeline")

    def open_incident(self, correlation_key: str) -> str:
        """Which incident reports of this kind and area join now."""
        return self._k("open", correlation_key)

    # drafts, approvals, statements
    def draft(self, draft_id: str) -> str:
        """The draft's JSON."""
        return self._k("draft", draft_id)

    def approval(self, approval_id: str) -> str:
        """Hash: the approval request's JSON and its status."""
        return self._k("approval", approval_id)

    def approvals_pending(self) -> str:
        """Sorted set approval id -> deadline (epoch seconds)."""
        return self._k("approvals", "pending")

    def approvals(self) -> str:
        """Sorted set approval id -> created time."""
        return self._k("approvals")

    def reminder(self, approval_id: str, level: int, percent: int) -> str:
        """Set once a reminder of a level went out."""
        return self._k("approval", approval_id, "reminded", str(level), str(percent))

    def inbox(self, person_id: str) -> str:
        """Hash prompt id -> prompt JSON: a person's web inbox."""
        return self._k("inbox", person_id)

    def legacy_timer_store(self) -> tuple[str, str]:
        """APScheduler's pickled job store (hash) and run times (sorted set) that Loa kept
        before timers moved to memory: never read, deleted by the worker at start."""
        return self._k("timers", "jobs"), self._k("timers", "run_times")

    def decision(self, decision_id: str) -> str:
        """The outcome of one decision (accepted or refused, and why)."""
        return self._k("decision", decision_id)

    def statement(self, statement_id: str) -> str:
        """Hash: the statement's JSON and where it was published."""
        return self._k("statement", statement_id)

    def statements_published(self) -> str:
        """Sorted set statement id -> published time: what the public web shows."""
        return self._k("statements", "published")

    # deliveries (SMS, email)
    def delivery(self, delivery_id: str) -> str:
        """Hash: a delivery's status, provider id, attempts and last error."""
        return self._k("delivery", delivery_id)

    def provider_message(self, provider_id: str) -> str:
        """Which delivery a provider's message id (Twilio SID) belongs to."""
        return self._k("provider", provider_id)

    def early_callbacks(self) -> str:
        """Hash provider id -> status of callbacks that came before we recorded the send."""
        return self._k("provider", "early")

    def opted_out(self, channel: str) -> str:
        """Set of recipients (E.164 numbers, addresses) who asked for nothing more."""
        return self._k("optout", channel)

    def rate_bucket(self, channel: str, sender: str) -> str:
        """The token bucket that rate-limits one sender."""
        return self._k("rate", channel, sender)

    def link_used(self, nonce: str) -> str:
        """Set once an email link was used (links work once)."""
        return self._k("link", nonce)

    def prompted(self, person_id: str) -> str:
        """Sorted set approval id -> first prompt time: the requests a person was given a
        reply code for (newest kept), where an SMS answer's code is looked for."""
        return self._k("prompted", person_id)

    def short_link(self, short_id: str) -> str:
        """The signed decision link a short `/d/<id>` link in an SMS stands for (expires
        with it)."""
        return self._k("shortlink", short_id)

    # inbound SMS: stored before they are answered, finished from here
    def inbound_sms(self, message_sid: str) -> str:
        """Hash: an inbound SMS (sender, body, when) while pending; its answer (TwiML) once
        done, kept 30 days so a replayed webhook does nothing."""
        return self._k("inbound", "sms", message_sid)

    def inbound_pending(self) -> str:
        """Sorted set MessageSid -> received time of inbound SMS not finished yet."""
        return self._k("inbound", "sms", "pending")

    # subscribers
    def subscriber(self, sub_id: str) -> str:
        """A subscriber's JSON."""
        return self._k("sub", sub_id)

    def subs_all(self) -> str:
        """Set of every subscriber id."""
        return self._k("subs", "all")

    def subs_active(self) -> str:
        """Set of the subscribers who receive messages now."""
        return self._k("subs", "active")

    def subs_index(self, kind: str, value: str) -> str:
        """Set of subscriber ids by area, topic, channel or language."""
        return self._k("subs", kind, value)

    def subs_by_contact(self, contact: str) -> str:
        """Which subscriber has this phone or (lower-case) email."""
        return self._k("subs", "contact", contact)

    def optin_code(self, purpose: str, contact: str) -> str:
        """Hash: the HMAC of the code last sent to a phone to join or leave, its expiry and
        how many wrong tries it has had (expires with the code)."""
        return self._k("optin", "code", purpose, contact)

    def optin_request(self, sub_id: str) -> str:
        """A web subscription waiting for its confirmation (JSON), with what is confirmed."""
        return self._k("optin", "request", sub_id)

    def dispatch(self, statement_id: str) -> str:
        """Hash of a statement's fan-out counters: targeted / sent / delivered / failed."""
        return self._k("dispatch", statement_id)

    def followups(self) -> str:
        """Hash of messages a committed escalation step still has to send."""
        return self._k("followups")

    # people who log in to the web console
    def account(self, username: str) -> str:
        """Hash: an account's role, person, argon2 password hash, session epoch and sealed
        TOTP secret (with the last time step a code was used at)."""
        return self._k("account", username)

    def accounts(self) -> str:
        """Set of every account's username."""
        return self._k("accounts")

    def token(self, digest: str) -> str:
        """An API token's holder record (JSON), by the SHA-256 of the token."""
        return self._k("token", digest)

    def token_names(self) -> str:
        """Hash token name -> the SHA-256 of its live token."""
        return self._k("tokens")

    # tips: unverified words from anyone, for the duty officers
    def tip(self, tip_id: str) -> str:
        """A tip's JSON."""
        return self._k("tip", tip_id)

    def tips(self) -> str:
        """Sorted set tip id -> received time."""
        return self._k("tips")

    def rate_window(self, bucket: str, who: str) -> str:
        """Counter of attempts in the current window (login, public forms)."""
        return self._k("ratewin", bucket, who)

    def login_backoff(self, username: str) -> str:
        """Hash: an account's recent failed logins from anywhere and when it may be tried
        next (lives 15 minutes after the last failure)."""
        return self._k("loginbackoff", username)

    # operations
    def audit(self) -> str:
        """Stream of every audit event."""
        return self._k("audit")

    def worker_heartbeat(self, worker_id: str) -> str:
        """Present (with a short TTL) while a worker of that id is alive."""
        return self._k("worker", worker_id)

    def worker_heartbeats(self) -> str:
        """Pattern matching every worker heartbeat key."""
        return self._k("worker", "*")

    def dead_letters(self) -> str:
        """Stream of dead letters (also on the dead-letters topic)."""
        return self._k("dead-letters")
