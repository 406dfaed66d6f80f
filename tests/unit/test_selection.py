"""Which playbook an incident gets: most specific match, then priority, else the fallback."""

from __future__ import annotations

from coordinator.city import City
from coordinator.events import Severity
from coordinator.plan.selection import judge, select_playbook
from coordinator.playbooks.models import Playbook


def test_a_flood_anywhere_gets_the_city_flood_playbook(
        playbooks: dict[str, Playbook], city: City) -> None:
    """A severe flood in Ba Dinh matches only `flood` (the Old Quarter one is area-bound)."""
    chosen = select_playbook(playbooks, "flood", Severity.severe, "hn-ba-dinh-kim-ma", city)
    assert chosen.playbook_id == "flood"
    assert chosen.reason == "matched: kind flood, severity severe >= moderate, any area"


def test_the_more_specific_area_wins(playbooks: dict[str, Playbook], city: City) -> None:
    """In a ward of Hoan Kiem the Old Quarter playbook beats the city-wide one."""
    chosen = select_playbook(playbooks, "flood", Severity.severe, "hn-hoan-kiem-hang-bac", city)
    assert chosen.playbook_id == "flood-old-quarter"
    assert chosen.reason.endswith("; more specific than flood")


def test_below_the_minimum_severity_falls_back_to_the_general_playbook(
        playbooks: dict[str, Playbook], city: City) -> None:
    """A moderate flood in Hoan Kiem is under the Old Quarter playbook's floor (severe)."""
    chosen = select_playbook(playbooks, "flood", Severity.moderate, "hn-hoan-kiem", city)
    assert chosen.playbook_id == "flood"
    old_quarter = next(c for c in chosen.candidates if c.playbook_id == "flood-old-quarter")
    assert old_quarter.why == "severity moderate is below its minimum severe"


def test_no_match_goes_to_the_fallback(playbooks: dict[str, Playbook], city: City) -> None:
    """An unknown kind lands on the fallback: the duty officer decides."""
    chosen = select_playbook(playbooks, "meteor", Severity.extreme, "hn-tay-ho", city)
    assert chosen.playbook_id == "fallback"
    assert chosen.reason == "no playbook matched: the duty officer decides"
    assert not any(c.matches for c in chosen.candidates)


def test_priority_breaks_a_tie_of_specificity(playbooks: dict[str, Playbook], city: City) -> None:
    """Two equally specific playbooks: the higher priority wins, and the reason says so."""
    base = playbooks["flood"]
    rival = base.model_copy(update={"id": "flood-rival", "priority": base.priority + 5})
    chosen = select_playbook({**playbooks, "flood-rival": rival}, "flood", Severity.severe,
                             "hn-ba-dinh", city)
    assert chosen.playbook_id == "flood-rival"
    assert chosen.reason.endswith("; higher priority than flood")


def test_judge_explains_a_kind_mismatch(playbooks: dict[str, Playbook], city: City) -> None:
    """`loa playbooks explain` shows why a playbook does not fit."""
    verdict = judge(playbooks["fire"], "flood", Severity.severe, "hn-ba-dinh", city)
    assert not verdict.matches
    assert verdict.why == "kind 'flood' is not one of fire, explosion"


def test_judge_explains_an_area_mismatch(playbooks: dict[str, Playbook], city: City) -> None:
    """An area outside the playbook's areas is named."""
    verdict = judge(playbooks["flood-old-quarter"], "flood", Severity.extreme, "hn-tay-ho", city)
    assert verdict.why == "area 'hn-tay-ho' is not within hn-hoan-kiem"
