"""Local stand-ins for the outside services Loa talks to, for tests, demos and `loa up`:
a Twilio-compatible Messages API (``sandbox.sms``) and an SMTP server (``sandbox.smtp``).

Not part of the product: nothing in ``coordinator`` or ``channels`` imports it (the
product starts it as a subprocess, ``python -m sandbox.sms``), and it imports neither.
"""
