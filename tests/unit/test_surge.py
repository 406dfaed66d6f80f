"""The surge detector's pure parts: the window's minutes, the innermost area over the
threshold, and the duty officers' message."""

from __future__ import annotations

from datetime import UTC, datetime

from coordinator.city import load_city
from coordinator.incidents.surge import Surge, first_over, minutes, surge_text
from coordinator.settings import Settings
from tests.conftest import FIXTURE_MAP

AT = datetime(2026, 12, 4, 8, 0, 30, tzinfo=UTC)


def test_a_window_covers_its_minutes_newest_first() -> None:
    at = AT.timestamp()  # 08:00:30 is epoch minute 29,939,520
    assert minutes(at, 600) == [29_939_520 - i for i in range(10)]
    assert minutes(at, 60) == [29_939_520] and minutes(at, 20) == [29_939_520]


def test_the_innermost_area_at_the_threshold_is_the_surge() -> None:
    path = ["hn-hoan-kiem-hang-bac", "hn-hoan-kiem", "hn"]
    assert first_over({"hn-hoan-kiem-hang-bac": 3, "hn-hoan-kiem": 5, "hn": 9}, path, 3) == (
        "hn-hoan-kiem-hang-bac")
    assert first_over({"hn-hoan-kiem-hang-bac": 2, "hn-hoan-kiem": 5, "hn": 9}, path, 3) == (
        "hn-hoan-kiem")
    assert first_over({"hn": 2}, path, 3) is None


def test_the_message_names_kind_area_count_window_and_incident() -> None:
    city = load_city(Settings(_env_file=None).config_dir, FIXTURE_MAP)  # type: ignore[call-arg]
    surge = Surge(id="SRG-x", kind="misinformation", area="hn-hoan-kiem", count=14,
                  window_s=600, at=AT, incident_id="INC-00042")
    assert surge_text(surge, city) == (
        "Loa: 14 báo cáo/tin báo «Thông tin sai lệch» tại Quận Hoàn Kiếm trong 10 phút "
        "(INC-00042). / 14 reports/tips of Misinformation in Hoan Kiem District in 10 "
        "minutes (INC-00042).")
    unknown = Surge(id="SRG-y", kind="gone", area="nowhere", count=3, window_s=300, at=AT)
    assert surge_text(unknown, city) == ("Loa: 3 báo cáo/tin báo «gone» tại nowhere trong 5 "
                                         "phút. / 3 reports/tips of gone in nowhere in 5 "
                                         "minutes.")
