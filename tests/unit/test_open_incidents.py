"""Where the intake guesses a report goes (pure: no Redis)."""

from __future__ import annotations

from coordinator.events import Report, Severity
from coordinator.incidents.intake import OpenIncidents, TakenIn


def report(n: int, area: str = "hn-ba-dinh", **extra: object) -> Report:
    return Report(id=f"token:t:{n}", kind="flood", severity=Severity.severe, area=area,
                  title="Ngập", **extra)  # type: ignore[arg-type]


def test_the_guess_is_the_last_incident_seen_for_the_kind_and_area() -> None:
    seen = OpenIncidents()
    assert seen.likely(report(1)) is None
    seen.saw(report(1), TakenIn("INC-00001", opened=True, first_time=True))
    seen.saw(report(2, area="hn-cau-giay"), TakenIn("INC-00002", opened=True, first_time=True))
    assert seen.likely(report(3)) == "INC-00001"
    assert seen.likely(report(3, area="hn-cau-giay")) == "INC-00002"
    assert seen.likely(report(3, area="hn-dong-da")) is None
    assert seen.likely(report(3, exercise=True)) is None  # a drill correlates apart
    seen.saw(report(4), TakenIn("INC-00003", opened=True, first_time=True))
    assert seen.likely(report(5)) == "INC-00003"


def test_replays_attachments_and_claims_teach_nothing() -> None:
    seen = OpenIncidents()
    seen.saw(report(1), TakenIn("INC-00001", opened=True, first_time=True))
    seen.saw(report(1), TakenIn("INC-00009", opened=False, first_time=False))  # a replay
    seen.saw(report(2, attach_to="INC-00008"), TakenIn("INC-00008", opened=False,
                                                       first_time=True))
    assert seen.likely(report(3)) == "INC-00001"
    # a report that names its incident: that one; a claim is matched by its words: none
    assert seen.likely(report(3, attach_to="INC-00007")) == "INC-00007"
    rumour = Report(id="token:t:4", kind="misinformation", severity=Severity.moderate,
                    area="hn-ba-dinh", title="Tin đồn", claim="đê vỡ")
    seen.saw(rumour, TakenIn("INC-00006", opened=True, first_time=True))
    assert seen.likely(rumour) is None
    assert seen.likely(report(5)) == "INC-00001"


def test_it_holds_a_bounded_number_of_places() -> None:
    seen = OpenIncidents()
    for n in range(OpenIncidents.MOST + 1):
        seen.saw(report(n, area=f"a-{n}"), TakenIn(f"INC-{n}", opened=True, first_time=True))
    assert seen.likely(report(0, area="a-0")) is None  # forgotten once full
    assert seen.likely(report(0, area=f"a-{OpenIncidents.MOST}")) == f"INC-{OpenIncidents.MOST}"
