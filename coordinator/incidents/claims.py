"""Is this the same rumour again? Near-duplicate claims by character shingles. Pure.

People retell a rumour with small changes: other words here and there, capitals and
exclamation marks, and very often Vietnamese typed without its diacritics. A claim is
folded (case, diacritics, `đ`, punctuation and spacing) and cut into overlapping runs of
three characters; two claims are the same rumour when the Jaccard similarity of those sets
reaches the threshold (0.4 by default: a retelling scores 0.4 to 1.0, a different rumour
about the same place 0.1 to 0.3; see the unit tests). A claim in another language shares
almost no shingles with the first: a duty officer merges those by hand.

The comparison is exact, not estimated (no MinHash): claims are short (at most
1,000 characters) and a new claim is compared with the variants of the open rumours only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from coordinator.languages import without_diacritics

SHINGLE = 3
_NOT_WORD = re.compile(r"[^\w\s]+")


def fold(text: str) -> str:
    """Lower case, no diacritics (`đ` → `d`), no punctuation, single spaces."""
    bare = without_diacritics(text.casefold())
    return " ".join(_NOT_WORD.sub(" ", bare).split())


def shingles(text: str) -> frozenset[str]:
    """The folded text's runs of `SHINGLE` characters (the whole text when shorter)."""
    folded = fold(text)
    if len(folded) <= SHINGLE:
        return frozenset({folded}) if folded else frozenset()
    return frozenset(folded[i:i + SHINGLE] for i in range(len(folded) - SHINGLE + 1))


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the two claims' shingle sets, 0.0 to 1.0."""
    left, right = shingles(a), shingles(b)
    if not left or not right:
        return 0.0
    return len(left & right) / len(left | right)


@dataclass(frozen=True)
class Match:
    """The open rumour a claim belongs to, and how close its nearest variant is."""

    incident_id: str
    score: float


def best_match(claim: str, variants: Mapping[str, Iterable[str]], threshold: float
               ) -> Match | None:
    """The incident whose closest variant is most similar to `claim`, if that reaches
    `threshold`; ties go to the incident listed first."""
    own = shingles(claim)
    best: Match | None = None
    for incident_id, texts in variants.items():
        for text in texts:
            other = shingles(text)
            if not own or not other:
                continue
            score = len(own & other) / len(own | other)
            if score >= threshold and (best is None or score > best.score):
                best = Match(incident_id, score)
    return best


@dataclass(frozen=True)
class CorrectionClock:
    """False information is answered on a clock: the correction published within `goal_s`
    of the first report."""

    started_at: datetime
    goal_s: float
    corrected_at: datetime | None

    @property
    def due_at(self) -> datetime:
        """When the correction should be public by."""
        return self.started_at + timedelta(seconds=self.goal_s)

    def took_s(self, now: datetime) -> float:
        """First report to the correction (or to `now`, while there is none)."""
        return ((self.corrected_at or now) - self.started_at).total_seconds()

    def met(self) -> bool | None:
        """Whether the correction was public in time; None while there is none."""
        return None if self.corrected_at is None else self.corrected_at <= self.due_at

    def to_json(self, now: datetime) -> dict[str, object]:
        """As the record and the API show it."""
        return {"goal_s": self.goal_s, "due_at": self.due_at.isoformat(),
                "corrected_at": self.corrected_at.isoformat() if self.corrected_at else None,
                "took_s": round(self.took_s(now), 3), "met": self.met()}
