"""Every Redis key Loa uses, in one place: this package (the flow's keys here, from
reports in to tips; the operations' in :mod:`coordinator.keys.operations`). All start with
the configured prefix.

Each key's docstring says how long it lives: *kept* (the record, or a few bytes per thing
that must never repeat), *expires* (a TTL, and after what), *pruned* (deleted by the code
named) or *capped* (a stream's MAXLEN, a sorted set's size)."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.keys.operations import OperationKeys


@dataclass(frozen=True)
class Keys(OperationKeys):
    """Key names under one prefix (``LOA_REDIS_PREFIX``)."""

    # reports in
    def outbox(self) -> str:
        """Hash report id -> report JSON. Pruned: each entry when the pipeline takes the
        report in (incidents.intake)."""
        return self._k("outbox")

    def outbox_times(self) -> str:
        """Sorted set report id -> when last put on the broker. Pruned: with its outbox entry."""
        return self._k("outbox", "sent")

    def report_fingerprints(self) -> str:
        """Hash report id -> the fingerprint of the report filed under it (reports.filing):
        an id used again for another report is refused, not dropped as a replay. Kept: a
        few bytes a report, as its record is."""
        return self._k("report_fingerprints")

    def report(self, report_id: str) -> str:
        """Hash: the report as taken in, with the incident it went to. Kept: the record (and
        what makes a replayed report a no-op)."""
        return self._k("report", report_id)

    # incidents
    def incident_seq(self) -> str:
        """Counter behind incident ids. Kept."""
        return self._k("seq", "incident")

    def incident(self, incident_id: str) -> str:
        """Hash: the incident's current state. Kept: the record."""
        return self._k("incident", incident_id)

    def incidents(self) -> str:
        """Sorted set incident id -> opened time. Kept: one entry per incident."""
        return self._k("incidents")

    def timeline(self, incident_id: str) -> str:
        """List of the incident's timeline entries (JSON), oldest first. Kept: the record."""
        return self._k("incident", incident_id, "timeline")

    def open_incident(self, correlation_key: str) -> str:
        """Which incident reports of this kind and area join now. Pruned: when that
        incident is closed (a later one takes the key over)."""
        return self._k("open", correlation_key)

    def report_times(self, incident_id: str) -> str:
        """Sorted set report id -> when the report was received, one per report the
        incident has (its trend: rising or falling). Kept: a few bytes per report."""
        return self._k("incident", incident_id, "reports")

    def open_claims(self, exercise: bool) -> str:
        """Set of the open incidents about false claims (drills apart), which a new claim is
        compared with. Pruned: an incident leaves it when merged, or, once closed, when the
        next claim is compared (intake drops the closed ones it meets)."""
        return self._k("claims", "open", *(["exercise"] if exercise else []))

    def claim_variants(self, incident_id: str) -> str:
        """Hash report id -> the claim as that report worded it. Kept: the record (a merge
        copies the merged incident's variants here)."""
        return self._k("incident", incident_id, "claims")

    def promises(self) -> str:
        """Sorted set incident id -> when its promised next update is due. Pruned: when kept,
        withdrawn, broken and flagged, or its incident closed."""
        return self._k("promises")

    def surge_count(self, kind: str, area: str, minute: int) -> str:
        """Counter: reports and tips of `kind` in `area` (or inside it) in one minute
        (epoch minutes). Expires: two minutes after the surge window has passed it."""
        return self._k("surge", kind, area, str(minute))

    def surge_raised(self, kind: str, area: str) -> str:
        """The surge raised for `kind` on a path through `area` in the current window.
        Expires: after the surge window, when the same surge may be raised again."""
        return self._k("surge", "raised", kind, area)

    def surge_voice(self, kind: str, voice: str) -> str:
        """An anonymous tipper (a keyed hash of the address) counted this surge window; its
        next tips of `kind` are not counted. Expires: after the window."""
        return self._k("surge", "voice", kind, voice)

    def prepared_update(self, incident_id: str) -> str:
        """The update Loa drafted ahead of the incident's promised one (JSON). Pruned: when
        the promise changes or a new draft version is made."""
        return self._k("incident", incident_id, "prepared-update")

    def public_events(self) -> str:
        """Stream of what changed on the public pages (a statement published or withdrawn):
        the web processes read it for live pages. Capped: about the last 1,000."""
        return self._k("public", "events")

    def surges(self) -> str:
        """Stream of the surges raised (JSON). Capped: about the last 1,000; each is
        also in the audit trail."""
        return self._k("surges")

    # drafts, approvals, statements
    def draft(self, draft_id: str) -> str:
        """The draft's JSON. Kept: the record."""
        return self._k("draft", draft_id)

    def approval(self, approval_id: str) -> str:
        """Hash: the approval request's JSON and its status. Kept: the record."""
        return self._k("approval", approval_id)

    def approvals_pending(self) -> str:
        """Sorted set approval id -> deadline (epoch s). Pruned: once it is no longer pending."""
        return self._k("approvals", "pending")

    def approvals(self) -> str:
        """Sorted set approval id -> created time. Kept: one entry per request."""
        return self._k("approvals")

    def reminder(self, approval_id: str, level: int, percent: int) -> str:
        """Set once a reminder of a level went out. Kept: what stops it going out twice."""
        return self._k("approval", approval_id, "reminded", str(level), str(percent))

    def inbox(self, person_id: str) -> str:
        """Hash prompt id -> prompt JSON: a person's web inbox. Kept: what each was asked."""
        return self._k("inbox", person_id)

    def legacy_timer_store(self) -> tuple[str, str]:
        """APScheduler's pickled job store (hash) and run times (sorted set) that Loa kept
        before timers moved to memory: never read. Pruned: deleted by the worker at start."""
        return self._k("timers", "jobs"), self._k("timers", "run_times")

    def decision(self, decision_id: str) -> str:
        """The outcome of one decision or incident action (accepted or refused, and why).
        Kept: what answers a replayed or resent event the same way."""
        return self._k("decision", decision_id)

    def statement(self, statement_id: str) -> str:
        """Hash: the statement's JSON and where it was published. Kept: the record."""
        return self._k("statement", statement_id)

    def statements_published(self) -> str:
        """Sorted set statement id -> published time: what the public web shows.
        Kept."""
        return self._k("statements", "published")

    def exercises_published(self) -> str:
        """Sorted set statement id -> published time of drills' statements, kept apart from
        the real ones (shown at /exercises only). Kept."""
        return self._k("statements", "exercises")

    # deliveries (SMS, email)
    def delivery(self, delivery_id: str) -> str:
        """Hash: a delivery's status, provider id, attempts and last error. Kept: the record."""
        return self._k("delivery", delivery_id)

    def provider_message(self, provider_id: str) -> str:
        """Which delivery a provider's message id (Twilio SID) belongs to. Expires: a week
        after the send (dispatch.provider_ids), long after the last status callback."""
        return self._k("provider", provider_id)

    def early_callbacks(self) -> str:
        """Hash provider id -> `status|error code` of callbacks that came before we
        recorded the send. Pruned: taken when the send is recorded; expires: the whole hash
        a week after the latest early callback (dispatch.status_callbacks)."""
        return self._k("provider", "early")

    def unconfirmed(self) -> str:
        """Sorted set delivery id -> when to ask the provider for its status: SMS whose final
        status has not come. Pruned: at that status, or 3 days on (dispatch.status_sweep)."""
        return self._k("provider", "unconfirmed")

    def opted_out(self, channel: str) -> str:
        """Set of numbers and addresses that asked for nothing more. Kept until START."""
        return self._k("optout", channel)

    def rate_bucket(self, channel: str, sender: str) -> str:
        """The token bucket that rate-limits one sender. Expires: 60 s after its last use."""
        return self._k("rate", channel, sender)

    def link_used(self, nonce: str) -> str:
        """Set once an email link was used (links work once). Kept; deleted if given back."""
        return self._k("link", nonce)

    def prompted(self, person_id: str) -> str:
        """Sorted set approval id -> first prompt time: the requests a person was given a
        reply code for. Capped: the newest 50 (approvals.inbox.PROMPTED_KEPT)."""
        return self._k("prompted", person_id)

    def short_link(self, short_id: str) -> str:
        """The signed decision link a short `/d/<id>` link in an SMS stands for. Expires:
        with the link (the request's deadline, else a day; at least a minute)."""
        return self._k("shortlink", short_id)

    def incident_reached(self, incident_id: str) -> str:
        """Bitmap of the subscriber numbers any of an incident's statements was cut for: an
        update, correction or all-clear reaches them all, wherever the area moved. Kept."""
        return self._k("incident", incident_id, "reached")

    # inbound SMS: stored before they are answered, finished from here
    def inbound_sms(self, message_sid: str) -> str:
        """Hash: an inbound SMS (sender, body, when) while pending; its answer (TwiML) once
        done. Expires: 30 days after it is done, so a replayed webhook does nothing
        (inbound.store.KEEP_DONE_S)."""
        return self._k("inbound", "sms", message_sid)

    def inbound_pending(self) -> str:
        """Sorted set MessageSid -> received time of unfinished inbound SMS. Pruned: when done."""
        return self._k("inbound", "sms", "pending")

    # subscribers, numbered (subscribers.store)
    def subs_next(self) -> str:  # the counter behind subscriber numbers; kept
        return self._k("subs", "next")

    def subs_records(self, bucket: int) -> str:
        """Hash number -> record, 512 numbers a bucket. Kept: one who leaves stays."""
        return self._k("subs", "rec", str(bucket))

    def subs_contacts(self, bucket: int) -> str:
        """Hash phone or (lower-case) email -> number, bucketed by the contact's CRC.
        Pruned: when the subscriber no longer has that contact."""
        return self._k("subs", "contacts", str(bucket))

    def subs_ids(self) -> str:
        """Hash id -> number of ids not `sub-n<number>` (older, imported). Kept."""
        return self._k("subs", "ids")

    def subs_active(self) -> str:
        """Bitmap of subscribers who receive messages now. Pruned: cleared on leaving."""
        return self._k("subs", "bits", "active")

    def subs_bits(self, kind: str, value: str) -> str:
        """Bitmap of subscribers by area, topic, channel, lang, `drills:yes`, `list:NAME`
        (pruned: cleared when it changes) or `tmp:*` (deleted where it is made)."""
        return self._k("subs", "bits", kind, value)

    def optin_code(self, purpose: str, contact: str) -> str:
        """Hash: the HMAC of the code last sent to a phone to join or leave, its expiry and
        how many wrong tries it has had. Expires: with the code, 15 minutes
        (subscribers.proofs.CODE_TTL_S); pruned when used up."""
        return self._k("optin", "code", purpose, contact)

    def optin_request(self, sub_id: str) -> str:
        """A web subscription waiting for its confirmation (JSON). Expires: with its link, 3
        days (subscribers.proofs.LINK_TTL); pruned when confirmed."""
        return self._k("optin", "request", sub_id)

    def dispatch(self, statement_id: str) -> str:
        """Hash: a statement's dispatch ledger (where its fan-out is in the audience, how
        many batches it made, when it last moved, whether it was withdrawn) and its counters
        targeted / sent / delivered / failed per channel. Kept: the record."""
        return self._k("dispatch", statement_id)

    def dispatch_audience(self, statement_id: str) -> str:
        """Bitmap of subscriber numbers: a statement's audience, fixed when its fan-out
        starts, read a chunk at a time. Pruned: once every chunk is in batches."""
        return self._k("dispatch", statement_id, "audience")

    def dispatch_batch(self, statement_id: str, channel: str, number: int) -> str:
        """The subscriber numbers of one batch of a statement's deliveries on a channel, comma
        separated. Pruned: when the batch is done (dispatch.ledger)."""
        return self._k("dispatch", statement_id, "batch", channel, str(number))

    def dispatch_done(self, statement_id: str) -> str:
        """Set of a statement's finished batches (`channel:number`). Pruned: when all are."""
        return self._k("dispatch", statement_id, "done")

    def dispatch_lock(self, statement_id: str) -> str:
        """Who is splitting a statement's audience into batches now. Expires: 30 s after
        its holder last moved (dispatch.fanout)."""
        return self._k("dispatch", statement_id, "lock")

    def dispatches_open(self) -> str:
        """Sorted set statement id -> when its fan-out started: the fan-outs not finished.
        Pruned: when one finishes (dispatch.ledger)."""
        return self._k("dispatches", "open")

    def deliveries_pending(self) -> str:
        """Hash delivery id -> the request (JSON) of a single delivery (a prompt, a code)
        put on the broker and not finished yet: sent again if the broker lost it. Pruned:
        when the delivery is finished (dispatch.deliveries)."""
        return self._k("deliveries", "pending")

    def recovery_lock(self) -> str:
        """Which worker runs the recovery round now. Expires: after a few seconds."""
        return self._k("recovery", "lock")

    def followups(self) -> str:
        """Hash of messages a committed step put (or is to put) on the broker, each kept
        until its consumer has done what it asks (coordinator.outbox)."""
        return self._k("followups")

    # people who log in to the web console
    def account(self, username: str) -> str:
        """Hash: an account's role, person, argon2 password hash, session epoch and sealed
        TOTP secret (with the last time step a code was used at). Kept until removed."""
        return self._k("account", username)

    def accounts(self) -> str:
        """Set of every account's username. Kept; pruned when an account is removed."""
        return self._k("accounts")

    def token(self, digest: str) -> str:
        """An API token's holder (JSON), by the token's SHA-256. Kept until it is revoked."""
        return self._k("token", digest)

    def token_issues(self) -> str:
        """Hash token name -> how many tokens of that name were issued (tokens): a name
        given again namespaces its reports' ids apart. Kept: never reused."""
        return self._k("token_issues")

    def token_names(self) -> str:
        """Hash token name -> the SHA-256 of its live token. Pruned: on revocation."""
        return self._k("tokens")

    # tips: unverified words from anyone, for the duty officers
    def tip(self, tip_id: str) -> str:
        """A tip's JSON. Kept: the record."""
        return self._k("tip", tip_id)

    def tips(self) -> str:
        """Sorted set tip id -> received time. Kept."""
        return self._k("tips")

    def rate_window(self, bucket: str, who: str) -> str:
        """Counter of attempts in the current window (login, public forms, wrong SMS
        codes). Expires: with its window."""
        return self._k("ratewin", bucket, who)

    def login_backoff(self, username: str) -> str:
        """Hash: an account's recent failed logins from anywhere and when it may be tried
        next. Expires: 15 minutes after the last failure (logins.FAILURES_KEPT_S)."""
        return self._k("loginbackoff", username)
