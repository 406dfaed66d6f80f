"""The channels Loa can send through, in one explicit mapping (no directory scanning)."""

from __future__ import annotations

from channels.base import Channel
from channels.email import EmailChannel
from channels.sms import SmsChannel
from channels.web import WebChannel
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis


def build_channels(settings: Settings, redis: Redis, keys: Keys) -> dict[str, Channel]:
    """Every channel the settings allow: web always, SMS with Twilio credentials, email with
    an SMTP host."""
    channels: dict[str, Channel] = {WebChannel.name: WebChannel(redis, keys)}
    if settings.twilio_account_sid and settings.twilio_auth_token is not None:
        channels[SmsChannel.name] = SmsChannel(settings, redis, keys)
    if settings.smtp_host:
        channels[EmailChannel.name] = EmailChannel(settings)
    return channels
