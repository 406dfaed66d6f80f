"""What makes a resent report the same one (reports.filing.fingerprint): what its filer said
and who they are, never when or how it arrived."""

from __future__ import annotations

from datetime import UTC, datetime

from coordinator.events import Report, ReportSource
from coordinator.reports.filing import fingerprint

SOURCE = ReportSource(actor="token:desk", role="reporter", verified=True)


def report(**change: object) -> Report:
    fields: dict[str, object] = {
        "id": "t.desk:rep-1", "kind": "flood", "severity": "severe", "area": "hn-ba-dinh",
        "title": "Ngập sâu phố Đội Cấn", "source": SOURCE,
        "received_at": datetime(2026, 12, 7, 8, 0, tzinfo=UTC)}
    return Report.model_validate(fields | change)


def test_a_resend_later_or_by_another_interface_is_the_same_report() -> None:
    first = fingerprint(report())
    assert len(first) == 32 and int(first, 16) >= 0
    assert fingerprint(report(received_at=datetime(2026, 12, 7, 9, 30, tzinfo=UTC),
                              received_via="cli")) == first
    assert fingerprint(report(details="")) == first  # a default said or not


def test_anything_its_filer_said_otherwise_makes_it_another_report() -> None:
    first = fingerprint(report())
    changed = [report(title="Ngập sâu phố Kim Mã"), report(severity="extreme"),
               report(area="hn-hoan-kiem"), report(details="0,5 m"),
               report(source=ReportSource(actor="token:other", role="reporter",
                                          verified=True))]
    assert len({first, *(fingerprint(r) for r in changed)}) == 6
