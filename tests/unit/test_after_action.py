"""The after-action record's arithmetic and shape, with exact values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator.after_action.chart import deliveries_chart
from coordinator.after_action.figures import (
    DeliveryRow,
    Gathered,
    StatementFacts,
    approval_levels,
    chart_series,
    figures,
    reach,
)
from coordinator.after_action.markdown import _dur, record_markdown

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


TIMELINE = [
    {"at": at(0), "action": "incident.opened", "actor": "token:ubnd", "interface": "api",
     "subject": "r1"},
    {"at": at(2), "action": "approval.requested", "actor": "loa", "interface": "worker",
     "subject": "APR-00001-1", "detail": {"level": 1, "holders": ["an", "ha"]}},
    {"at": at(302), "action": "approval.escalated", "actor": "escalation",
     "interface": "system", "subject": "APR-00001-1",
     "detail": {"from_level": 1, "to_level": 2, "holders": ["binh"]}},
    {"at": at(422.5), "action": "approval.approved", "actor": "binh", "interface": "sms",
     "subject": "APR-00001-1"},
    {"at": at(425), "action": "statement.published", "actor": "w1", "interface": "worker",
     "subject": "STM-00001-1"},
]


def rows() -> list[DeliveryRow]:
    def row(channel: str, status: str, area: str, s: float) -> DeliveryRow:
        return DeliveryRow(channel, status, area, T0 + timedelta(seconds=s),
                           T0 + timedelta(seconds=s + 3) if status == "delivered" else None)
    return [row("sms", "delivered", "hn-ba-dinh", 423), row("sms", "sent", "hn-ba-dinh", 424),
            row("sms", "undelivered", "hn", 424), row("sms", "skipped", "hn", 423),
            row("email", "sent", "hn", 426)]


def gathered() -> Gathered:
    statement = {"id": "STM-00001-1", "msg_type": "Alert", "approved_by": ["binh"],
                 "approved_at": at(422.5), "published_at": at(425), "draft_id": "DRF-00001-1",
                 "texts": [{"channel": "sms", "language": "vi", "title": "",
                            "body": "[Loa Hà Nội] Ngập sâu"}]}
    return Gathered({"id": "INC-00001", "title": "Ngập sâu", "kind": "flood",
                     "severity": "severe", "area": "hn-ba-dinh", "status": "published",
                     "opened_at": at(0), "report_count": "3", "playbook": "flood"},
                    TIMELINE, [StatementFacts(statement, "first", T0 + timedelta(seconds=2),
                                              rows())])


def test_time_at_each_approval_level() -> None:
    [request] = approval_levels(TIMELINE)
    assert request["outcome"] == "approved" and request["decided_by"] == "binh"
    assert request["levels"] == [{"level": 1, "holders": ["an", "ha"], "held_s": 300.0},
                                 {"level": 2, "holders": ["binh"], "held_s": 120.5}]


def test_reach_per_channel_and_area_from_the_delivery_records() -> None:
    counted = reach(rows())
    assert counted["by_channel"] == {
        "email": {"targeted": 1, "sent": 1, "delivered": 0, "failed": 0, "skipped": 0},
        "sms": {"targeted": 4, "sent": 3, "delivered": 1, "failed": 1, "skipped": 1}}
    assert counted["by_area"]["hn-ba-dinh"] == {
        "sms": {"targeted": 2, "sent": 2, "delivered": 1, "failed": 0, "skipped": 0}}
    assert set(counted["by_area"]["hn"]) == {"sms", "email"}


def test_the_record_times_and_its_sections() -> None:
    record = figures(gathered())
    assert record["times"]["first_report_to_first_statement_s"] == 425.0
    assert record["statements"][0]["drafted_to_published_s"] == 423.0
    assert record["corrections"] == []
    assert chart_series(gathered())["sms"] == {"sent": [0.5, 1.5, 1.5], "delivered": [3.5]}
    text = record_markdown(record, "record.png")
    for heading in ("# After-action record: INC-00001: Ngập sâu", "## Summary", "## Times",
                    "## Approvals", "## Statements", "## Corrections and updates",
                    "## Deliveries over time", "## Timeline"):
        assert f"\n{heading}\n" in f"\n{text}", heading
    assert "| APR-00001-1 | 1 | an, ha | 5 min 00 s | escalated |  |" in text
    assert "| APR-00001-1 | 2 | binh | 2 min 00 s | approved | binh |" in text
    assert "| sms | 4 | 3 | 1 | 1 | 1 |" in text
    assert "First report to first statement: 7 min 05 s" in text
    assert "![Deliveries over time](record.png)" in text


def test_durations_read_as_people_say_them() -> None:
    assert [_dur(None), _dur(38.24), _dur(60), _dur(3725)] == [
        "—", "38.2 s", "1 min 00 s", "1 h 02 min"]


def test_the_chart_is_a_png() -> None:
    png = deliveries_chart(chart_series(gathered()), "INC-00001")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert deliveries_chart({}, "none").startswith(b"\x89PNG")
