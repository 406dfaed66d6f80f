"""Drills, the pure parts: the mark on every text, correlation kept apart, the report and
CSV rules, the incident record, and CAP's status."""

from __future__ import annotations

from datetime import UTC, datetime

from coordinator.city import load_city
from coordinator.events import RenderedText, Report, Severity
from coordinator.feeds import cap
from coordinator.model.incident import Incident, opened
from coordinator.playbooks.render import exercise_mark, marked_as_exercise
from coordinator.reports.filing import report_problems
from coordinator.settings import Settings
from coordinator.subscribers.csvio import parse_csv
from coordinator.subscribers.optin import applied_subscriber, requested_subscriber
from tests.conftest import FIXTURE_MAP
from tests.feed_schemas import xml_text
from tests.unit.test_feeds import BASE, TZ, statement, valid_cap

AT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def report(**extra: object) -> Report:
    return Report(id="token:t:1", kind="flood", severity=Severity.severe, area="hn-ba-dinh",
                  title="Ngập sâu", received_at=AT, **extra)  # type: ignore[arg-type]


def test_every_text_of_a_drill_starts_with_its_languages_mark_once() -> None:
    texts = [RenderedText(channel="web", language="vi", title="Ngập sâu", body="Nước ngập."),
             RenderedText(channel="email", language="en", title="Flooding", body="Water."),
             RenderedText(channel="sms", language="vi", body="Ngập sâu Kim Mã", segments=1,
                          segment_budget=2),
             RenderedText(channel="sms", language="fr", body="Inondation")]
    catalogs = load_city(Settings().config_dir, FIXTURE_MAP).catalogs
    marked = marked_as_exercise(texts, catalogs)
    assert [(t.title, t.body) for t in marked] == [
        ("[DIỄN TẬP] Ngập sâu", "[DIỄN TẬP] Nước ngập."),
        ("[EXERCISE] Flooding", "[EXERCISE] Water."),
        ("", "[DIỄN TẬP] Ngập sâu Kim Mã"),
        ("", "[EXERCICE] Inondation")]
    # an edited drill text is not marked twice
    assert marked_as_exercise(marked, catalogs) == marked
    assert exercise_mark("th", catalogs) == "[การฝึกซ้อม]"
    # 15 + 11 characters in UCS-2: one segment still; the count is of the marked text
    assert marked[2].segments == 1 and marked[2].segment_budget == 2
    long = RenderedText(channel="sms", language="vi", body="Ngập " * 13, segments=1)
    assert marked_as_exercise([long], catalogs)[0].segments == 2


def test_a_drill_and_a_real_report_never_share_an_incident() -> None:
    assert report().correlation_key() == "flood:hn-ba-dinh"
    assert report(exercise=True).correlation_key() == "flood:hn-ba-dinh:exercise"


def test_a_test_list_needs_an_exercise() -> None:
    city = load_city(Settings().config_dir, FIXTURE_MAP)
    assert report_problems(report(drill_list="press-office"), city) == [
        ("drill_list", "only an exercise goes to a test list: set exercise too, or leave "
                       "drill_list out")]
    assert report_problems(report(exercise=True, drill_list="press-office"), city) == []


def test_the_incident_record_keeps_the_drill() -> None:
    drill = opened("INC-00007", report(exercise=True, drill_list="press-office"))
    row = drill.to_hash()
    assert (row["exercise"], row["drill_list"]) == ("1", "press-office")
    back = Incident.from_hash(row)
    assert (back.exercise, back.drill_list, back.extra) == (True, "press-office", {})
    real = opened("INC-00008", report()).to_hash()
    assert "exercise" not in real and not Incident.from_hash(real).exercise


def test_csv_drills_column_yes_or_no_and_older_files_import() -> None:
    city = load_city(Settings().config_dir, FIXTURE_MAP)
    rows = list(parse_csv("phone,areas,channels,drills,lists\n"
                          "+84911222333,hn,sms,yes,press-office;qa\n"
                          "+84911222334,hn,sms,maybe,\n", city))
    (_, first, _), (line, second, why) = rows
    assert first is not None and first.drills and first.lists == ["press-office", "qa"]
    assert (line, second) == (3, None) and why.startswith("drills: ")
    [(_, older, _)] = list(parse_csv("phone,areas,channels\n+84911222335,hn,sms\n", city))
    assert older is not None and (older.drills, older.lists) == (False, [])


def test_a_drills_cap_alert_has_status_exercise() -> None:
    s = {**statement(1), "exercise": True}
    alert = valid_cap(cap.cap_alert(s, load_city(Settings().config_dir, FIXTURE_MAP), base_url=BASE,
                                    timezone=TZ))
    assert xml_text(alert, "cap:status") == "Exercise"
    real = valid_cap(cap.cap_alert(statement(1), load_city(Settings().config_dir, FIXTURE_MAP),
                                   base_url=BASE, timezone=TZ))
    assert xml_text(real, "cap:status") == "Actual"


def test_a_resident_opts_into_drills_on_the_web_form() -> None:
    areas, kinds = {"hn": None}, {"flood"}
    wanted, errors = requested_subscriber("0911222333", "", "vi", ["hn"], [], areas, kinds,
                                          ["vi"], drills=True)
    assert errors == {} and wanted is not None and wanted.drills
    active = applied_subscriber(wanted, {"sms"}, None, AT)
    assert active is not None and active.drills and active.status == "active"
    plain, _ = requested_subscriber("0911222334", "", "vi", ["hn"], [], areas, kinds, ["vi"])
    assert plain is not None and not plain.drills
