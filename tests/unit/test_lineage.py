"""Later versions of a statement: the line that says what changed."""

from __future__ import annotations

from coordinator.city import load_city
from coordinator.events import RenderedText
from coordinator.playbooks.render import marked_as_exercise, with_change_line
from coordinator.settings import Settings
from tests.conftest import FIXTURE_MAP

CATALOGS = load_city(Settings(_env_file=None).config_dir, FIXTURE_MAP).catalogs  # type: ignore[call-arg]

TEXTS = [RenderedText(channel="sms", language="vi", body="[Loa] Nước rút còn 10 cm.",
                      segments=1),
         RenderedText(channel="web", language="en", title="Water receding",
                      body="Water is down to 10 cm.")]


def test_an_update_opens_with_what_changed_in_each_language() -> None:
    changed = with_change_line(TEXTS, "update", "  nước rút còn 10 cm\nmore lines ignored",
                               CATALOGS)
    assert [t.body for t in changed] == [
        "CẬP NHẬT: nước rút còn 10 cm\n[Loa] Nước rút còn 10 cm.",
        "UPDATE: nước rút còn 10 cm\nWater is down to 10 cm."]
    assert changed[0].segments == 1 and changed[1].title == "Water receding"
    assert with_change_line(changed, "update", "nước rút còn 10 cm", CATALOGS) == changed  # once
    corrected = with_change_line(TEXTS, "correction", "x", CATALOGS)
    assert corrected[1].body.startswith("CORRECTION: x\n")
    cleared = with_change_line(TEXTS, "all_clear", "x", CATALOGS)
    assert cleared[0].body.startswith("DỠ BỎ CẢNH BÁO: x\n")


def test_no_change_line_without_words_or_for_a_plain_edit() -> None:
    assert with_change_line(TEXTS, "update", "   ", CATALOGS) == TEXTS
    assert with_change_line(TEXTS, "edit", "typo", CATALOGS) == TEXTS


def test_a_drills_update_keeps_the_mark_first() -> None:
    drill = marked_as_exercise(with_change_line(TEXTS, "update", "x", CATALOGS), CATALOGS)
    assert drill[0].body == "[DIỄN TẬP] CẬP NHẬT: x\n[Loa] Nước rút còn 10 cm."
