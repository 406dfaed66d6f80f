"""Phone numbers to E.164 (phonenumbers) and email addresses validated (email-validator)."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from channels.base import ChannelError


class InvalidContact(ChannelError, ValueError):
    """A phone number or email address that cannot be used; the message says why."""


def e164(number: str, region: str = "VN") -> str:
    """`+84901234567` from `0901 234 567` (region VN) or any international form."""
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidContact(f"{number!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidContact(f"{number!r} is not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def email_address(address: str) -> str:
    """The normalised address; raises InvalidContact naming what is wrong."""
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidContact(f"{address!r}: {exc}") from exc
