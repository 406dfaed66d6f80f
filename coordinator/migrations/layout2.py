"""The subscriber keys of layouts 1 and 2, which only the migration steps read: one JSON
string per subscriber, sets of ids as indexes, one string per contact."""

from __future__ import annotations

from coordinator.keys import Keys


def record(keys: Keys, sub_id: str) -> str:
    """A subscriber's JSON."""
    return f"{keys.prefix}:sub:{sub_id}"


def every(keys: Keys) -> str:
    """Set of every subscriber id."""
    return f"{keys.prefix}:subs:all"


def by_contact(keys: Keys, contact: str) -> str:
    """Which subscriber id has this phone or (lower-case) email."""
    return f"{keys.prefix}:subs:contact:{contact}"


INDEX_KINDS = ("area", "topic", "channel", "lang", "drills", "list", "tmp")
"""The kinds of index set (`subs:<kind>:<value>`), besides `subs:active` and `subs:all`."""


def index_prefixes(keys: Keys) -> list[str]:
    """The prefixes of the index sets."""
    return [f"{keys.prefix}:subs:{kind}:" for kind in INDEX_KINDS]


def active(keys: Keys) -> str:
    """Set of the active subscriber ids."""
    return f"{keys.prefix}:subs:active"
