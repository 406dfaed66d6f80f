"""SMS segment counting: GSM-7 (with its extension table) versus UCS-2."""

from __future__ import annotations

import math
import re

_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = set("^{}\\[~]|€\f")
# The same two tables as character classes: a draft's and a prompt's texts are checked
# on every plan, a character at a time in Python before.
_NOT_GSM7 = re.compile("[^" + "".join(re.escape(ch) for ch in
                                      sorted(_GSM7_BASIC | _GSM7_EXTENSION)) + "]")
_EXTENSION = re.compile("[" + "".join(re.escape(ch) for ch in sorted(_GSM7_EXTENSION)) + "]")


def is_gsm7(text: str) -> bool:
    """True when every character fits the GSM-7 alphabet (basic or extension table)."""
    return _NOT_GSM7.search(text) is None


def segment_count(text: str) -> int:
    """How many SMS segments `text` takes (GSM-7: 160/153 septets; UCS-2: 70/67 units)."""
    if not text:
        return 1
    if is_gsm7(text):
        units = len(text) + len(_EXTENSION.findall(text))  # an extension char takes two
        single, multi = 160, 153
    else:
        # UCS-2 counts UTF-16 code units: a character outside the BMP takes two.
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)
