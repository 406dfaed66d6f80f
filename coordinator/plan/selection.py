"""Which playbook handles an incident: the most specific match, then priority. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.city import City
from coordinator.errors import PlaybookError
from coordinator.events import Severity
from coordinator.playbooks.models import Playbook


@dataclass(frozen=True)
class Candidate:
    """One playbook judged against an incident."""

    playbook_id: str
    matches: bool
    why: str
    specificity: tuple[int, int, int] = (0, 0, 0)
    priority: int = 0


@dataclass(frozen=True)
class Selection:
    """The chosen playbook, why, and how every other one fared."""

    playbook_id: str
    reason: str
    candidates: list[Candidate]


def judge(playbook: Playbook, kind: str, severity: Severity, area: str, city: City) -> Candidate:
    """Whether one playbook matches, and why (not)."""
    m = playbook.match
    if playbook.fallback or m is None:
        return Candidate(playbook.id, False, "fallback: used only when nothing else matches")
    if kind not in m.kinds:
        return Candidate(playbook.id, False, f"kind {kind!r} is not one of {', '.join(m.kinds)}")
    if severity.rank < m.min_severity.rank:
        return Candidate(playbook.id, False,
                         f"severity {severity} is below its minimum {m.min_severity}")
    area_depth = 0
    if m.areas:
        inside = [code for code in m.areas if city.contains(code, area)]
        if not inside:
            return Candidate(playbook.id, False,
                             f"area {area!r} is not within {', '.join(m.areas)}")
        area_depth = max(city.areas[code].depth for code in inside)
    # Specificity: a narrower area first, then fewer kinds, then a higher severity floor.
    specificity = (area_depth, -len(m.kinds), m.min_severity.rank)
    why = f"kind {kind}, severity {severity} >= {m.min_severity}" + (
        f", area within {', '.join(m.areas)}" if m.areas else ", any area")
    return Candidate(playbook.id, True, why, specificity, playbook.priority)


def select_playbook(
    playbooks: dict[str, Playbook], kind: str, severity: Severity, area: str, city: City
) -> Selection:
    """The playbook for an incident; the fallback when none matches (PlaybookError when there
    is none, which load_playbooks does not let happen)."""
    candidates = [judge(p, kind, severity, area, city) for p in playbooks.values()]
    matching = sorted(
        (c for c in candidates if c.matches),
        key=lambda c: (c.specificity, c.priority, c.playbook_id),
        reverse=True,
    )
    if matching:
        best = matching[0]
        runner_up = matching[1:2]
        reason = f"matched: {best.why}"
        if runner_up:
            other = runner_up[0]
            tie = "more specific" if best.specificity != other.specificity else "higher priority"
            reason += f"; {tie} than {other.playbook_id}"
        return Selection(best.playbook_id, reason, candidates)
    fallback = next((p.id for p in playbooks.values() if p.fallback), None)
    if fallback is None:
        raise PlaybookError(["no playbook matches and there is no fallback playbook"])
    return Selection(fallback, "no playbook matched: the duty officer decides", candidates)
