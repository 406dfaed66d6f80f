"""What an inbound SMS asks for: a carrier keyword (STOP, START, HELP) or an approver's
answer (`YES 302610`, `NO 302610 reason`, Vietnamese `CÓ` / `KHÔNG`; the code is the
approver's own 6 digits, read as typed, leading zeros kept). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from coordinator.languages import fold

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
APPROVE_WORDS = frozenset({"YES", "Y", "CO", "OK", "DONG Y"})
REJECT_WORDS = frozenset({"NO", "N", "KHONG"})


@dataclass(frozen=True)
class Keyword:
    """A subscriber keyword: stop, start or help."""

    word: str


@dataclass(frozen=True)
class Answer:
    """An approver's answer; `code` may be empty when none was given."""

    verdict: str  # approve | reject
    code: str
    reason: str


@dataclass(frozen=True)
class Join:
    """`JOIN <area> [<area> ...]`: sign this phone up for official updates about those areas,
    in the language whose sign-up word it used (config/languages.yaml `join`: `JOIN`,
    `DANG KY`, `INSCRIRE`, ...; none given: the city's language); the SMS from the phone
    itself is the consent."""

    areas: list[str]
    language: str = ""


@dataclass(frozen=True)
class Unknown:
    """Anything else."""

    text: str


Command = Keyword | Answer | Join | Unknown


def parse_sms(body: str, join_words: Mapping[str, str] | None = None) -> Command:
    """Classify an inbound SMS body; `join_words` maps each sign-up word to its language
    (``Languages.join_words``)."""
    folded = fold(body)
    if folded in STOP_WORDS:
        return Keyword("stop")
    if folded in START_WORDS:
        return Keyword("start")
    if folded in HELP_WORDS:
        return Keyword("help")
    words = folded.split(" ")
    original = body.split()
    heads = dict(join_words or {})  # already folded
    for head in sorted(heads, key=len, reverse=True):  # the longest word first
        if folded == head or folded.startswith(head + " "):
            codes = original[len(head.split(" ")):]
            return Join([c.lower() for c in codes], heads[head])
    for size in (2, 1):  # "DONG Y" before "Y"
        head = " ".join(words[:size])
        verdict = ("approve" if head in APPROVE_WORDS
                   else "reject" if head in REJECT_WORDS else None)
        if verdict is None:
            continue
        rest = original[size:]
        code = rest[0] if rest and rest[0].isdigit() else ""
        reason = " ".join(rest[1:] if code else rest)
        return Answer(verdict, code, reason)
    return Unknown(body)
