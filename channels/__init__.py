"""Channels: one module a channel behind one small async interface (``channels.base``).

A leaf package: it imports nothing of the coordinator and takes plain values (a
``TwilioAccount``, an ``SmtpServer``, a ``RateLimit``). The coordinator builds the channels
from its settings (``coordinator.dispatch.channels``) and never imports a provider library
for sending itself.
"""
