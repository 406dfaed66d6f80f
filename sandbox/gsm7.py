"""GSM-7 segment counting for the SMS sandbox: how many parts Twilio would bill a body as.

The sandbox's own copy (it stands in for an outside service, so it shares nothing with
Loa's ``channels.segments``)."""

from __future__ import annotations

import math

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")  # each costs two septets (escape + char)


def num_segments(body: str) -> int:
    """How many SMS parts `body` takes: GSM-7 160/153 septets, else UCS-2 70/67 units."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in body):
        units, single, part = len(body) + sum(c in GSM7_EXTENDED for c in body), 160, 153
    else:
        units, single, part = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / part)
