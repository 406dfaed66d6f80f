"""What Twilio posts to us: the signature check of a webhook, inbound SMS and status
callbacks read from the form, and the TwiML that answers an SMS.

Twilio does not retry a webhook that answered 5xx unless its URL asks it to: configure
the inbound URL with :data:`RETRY_OVERRIDES` appended (a fragment, never sent to us), so
that an SMS that could not even be stored is sent again. Pure functions of their inputs.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from channels.base import ChannelError

# Twilio's connection overrides: retry up to 3 times on any failure, 5xx included.
RETRY_OVERRIDES = "#rc=3&rp=all"
MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")


class InvalidWebhook(ChannelError):
    """A webhook form that is not what Twilio sends."""


@dataclass(frozen=True)
class InboundText:
    """An SMS a person sent to one of our numbers."""

    sid: str
    sender: str
    body: str


@dataclass(frozen=True)
class StatusUpdate:
    """A message's status moved on at Twilio (sent, delivered, undelivered, failed)."""

    provider_id: str
    status: str
    error_code: str


def signature_valid(auth_token: str | None, url: str, form: Mapping[str, str],
                    signature: str) -> bool:
    """Whether `signature` (X-Twilio-Signature) signs `form` posted to `url` with the
    account's token. The URL signed may or may not carry the retry overrides' fragment:
    both are accepted. Without a token nothing is valid."""
    if not auth_token:
        return False
    validator = RequestValidator(auth_token)
    params = dict(form)
    # The SDK's own signature of the URL as we serve it, first: Twilio signs the URL it was
    # given, and that is the one a status callback is given. Only when it does not match,
    # `validate`'s variants (with and without the default port, and the overrides),
    # which cost twice as much.
    if hmac.compare_digest(validator.compute_signature(url, params).encode(),
                           signature.encode("utf-8", "replace")):
        return True
    return any(validator.validate(u, params, signature)
               for u in (url, url + RETRY_OVERRIDES))


def inbound_text(form: Mapping[str, str]) -> InboundText:
    """The SMS of an inbound webhook; raises InvalidWebhook without a Twilio MessageSid."""
    sid = form.get("MessageSid", "")
    if not MESSAGE_SID.match(sid):
        raise InvalidWebhook("MessageSid: missing or not a Twilio message id")
    return InboundText(sid, form.get("From", ""), form.get("Body", ""))


ENDINGS_AS = {"read": "delivered", "canceled": "failed"}
"""Twilio's other endings, as the ones Loa keeps: a read receipt (channels that have them)
is a delivery, a scheduled message called off a failure. Unread, they ranked as nothing:
never final, asked about for days."""


def as_ours(status: str) -> str:
    """A message status of Twilio's as Loa keeps it (see :data:`ENDINGS_AS`). Pure."""
    return ENDINGS_AS.get(status, status)


def status_update(form: Mapping[str, str]) -> StatusUpdate:
    """The status change of a status callback (fields Twilio left out read as "")."""
    return StatusUpdate(form.get("MessageSid", ""), as_ours(form.get("MessageStatus", "")),
                        form.get("ErrorCode", ""))


def reply_twiml(text: str) -> str:
    """TwiML that answers an SMS with `text` (escaped by the SDK's builder)."""
    reply = MessagingResponse()
    reply.message(text)
    return str(reply)
