"""The channels Loa sends through, built from Settings in one explicit mapping (the
composition root of ``channels/``, which itself knows nothing of the coordinator)."""

from __future__ import annotations

from email.utils import parseaddr

from channels.base import Channel, ChannelConfigError
from channels.email import EmailChannel, SmtpServer
from channels.sms import SmsChannel, SmsConfigError, TwilioAccount
from coordinator.dispatch.rate_limit import RateLimiter, lane_reserve
from coordinator.errors import ConfigError
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import Redis


def twilio_account(settings: Settings) -> TwilioAccount:
    """The Twilio account of the settings; raises SmsConfigError without credentials."""
    if not settings.twilio_account_sid or settings.twilio_auth_token is None:
        raise SmsConfigError("LOA_TWILIO_ACCOUNT_SID and LOA_TWILIO_AUTH_TOKEN are needed")
    return TwilioAccount(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        from_number=settings.twilio_from_number,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        status_callback=f"{settings.web_url()}/hooks/twilio/status",
        base_url=settings.twilio_base_url, timeout_s=settings.twilio_timeout_s)


def smtp_server(settings: Settings) -> SmtpServer:
    """The SMTP server of the settings (`host` empty when none is configured)."""
    return SmtpServer(
        host=settings.smtp_host or "", port=settings.smtp_port, tls=settings.smtp_tls,
        starttls=settings.smtp_starttls, username=settings.smtp_username,
        password=(settings.smtp_password.get_secret_value()
                  if settings.smtp_password is not None else None),
        sender=settings.email_from, connections=settings.smtp_connections)


def sms_channel(settings: Settings, redis: Redis, keys: Keys, bulk: bool = False
                ) -> SmsChannel:
    """The SMS channel, rate limited per sender across every worker through Redis; the
    `bulk` lane (a statement's fan-out) leaves a reserve for prompts and codes."""
    account = twilio_account(settings)
    rate = settings.sms_rate_per_s
    limiter = RateLimiter(redis, keys.rate_bucket("sms", account.sender_id), rate,
                          reserve=lane_reserve(rate) if bulk else 0.0)
    return SmsChannel(account, limiter)


def email_channel(settings: Settings, redis: Redis | None = None, keys: Keys | None = None
                  ) -> EmailChannel:
    """The email channel; raises ChannelConfigError without an SMTP host. With
    `LOA_EMAIL_RATE_PER_S` (and Redis), rate limited across every worker like SMS, on the
    priority lane (:func:`bulk_lane` gives a statement's batches the other)."""
    server = smtp_server(settings)
    limiter = (email_limiter(settings, redis, keys, bulk=False)
               if settings.email_rate_per_s > 0 and redis is not None and keys is not None
               else None)
    return EmailChannel(server, limiter)


def email_limiter(settings: Settings, redis: Redis, keys: Keys, bulk: bool) -> RateLimiter:
    """The shared email rate limit (`LOA_EMAIL_RATE_PER_S`) per envelope sender, on the bulk
    lane or the priority one."""
    rate = settings.email_rate_per_s
    sender = parseaddr(settings.email_from)[1] or settings.email_from
    return RateLimiter(redis, keys.rate_bucket("email", sender), rate,
                       reserve=lane_reserve(rate) if bulk else 0.0)


def build_channels(settings: Settings, redis: Redis, keys: Keys) -> dict[str, Channel]:
    """Every channel the settings allow: SMS with Twilio credentials, email with an SMTP
    host. (The public web page is no channel: ``statements.publication`` writes it.)
    Raises ConfigError for settings a channel cannot work with (e.g. no SMS sender)."""
    channels: dict[str, Channel] = {}
    try:
        if settings.twilio_account_sid and settings.twilio_auth_token is not None:
            channels[SmsChannel.name] = sms_channel(settings, redis, keys)
        if settings.smtp_host:
            channels[EmailChannel.name] = email_channel(settings, redis, keys)
    except ChannelConfigError as exc:  # the boundary: a channel's error as Loa's own
        raise ConfigError(str(exc)) from exc
    return channels


def bulk_lane(channels: dict[str, Channel], settings: Settings, redis: Redis, keys: Keys
              ) -> dict[str, Channel]:
    """The channels a statement's batches use: the same, but SMS (and email, when it has a
    rate limit) on the bulk lane of the shared rate limit (``dispatch.rate_limit``)."""
    bulk = dict(channels)
    if SmsChannel.name in channels:
        bulk[SmsChannel.name] = sms_channel(settings, redis, keys, bulk=True)
    email = channels.get(EmailChannel.name)
    if isinstance(email, EmailChannel) and settings.email_rate_per_s > 0:
        # the same connections on the bulk lane: LOA_SMTP_CONNECTIONS holds for the worker
        bulk[EmailChannel.name] = email.with_limiter(
            email_limiter(settings, redis, keys, bulk=True))
    return bulk
