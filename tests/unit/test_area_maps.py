"""Area maps: the 2025 map from the dataset with its groupings, the 2019 tree, a mapping file
between them, and what a move rewrites. Pure (no Redis)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from coordinator.area_mapping import mapping_path, parse_mapping, read_mapping
from coordinator.area_maps import areas_config, load_area_map
from coordinator.city import City, load_city
from coordinator.dispatch.audience import audience_areas
from coordinator.errors import ConfigError
from coordinator.events import Severity
from coordinator.languages import without_diacritics
from coordinator.migrations.area_moves import MoveReport, _rewritten, single
from coordinator.plan.selection import select_playbook
from coordinator.playbooks.loader import load_playbooks
from coordinator.settings import REPO_ROOT
from coordinator.web.public import near

CONFIG = REPO_ROOT / "config"
NOW = load_city(CONFIG)  # the map in force: hanoi-2025
OLD = load_city(CONFIG, "hanoi-2019")


def test_the_map_in_force_is_hanoi_since_july_2025() -> None:
    assert areas_config(CONFIG).map == "hanoi-2025"
    assert NOW.area_map.name == "hanoi-2025"
    units = [a for a in NOW.areas.values() if a.depth == 3]
    assert len(units) == 126
    assert Counter(a.name["vi"].split()[0] for a in units) == {"Phường": 51, "Xã": 75}
    ward = NOW.areas["hn-phuong-ba-dinh"]
    assert ward.name == {"vi": "Phường Ba Đình", "en": "Ba Dinh Ward", "fr": "Ba Đình",
                         "th": "Ba Dinh Ward"}  # Thai readers: the English name (fallback)
    assert ward.geocode == (("GSO", "00004"),)
    assert ward.parent == "hn" and NOW.areas["hn"].geocode == (("GSO", "01"),)
    assert NOW.areas["hn-xa-soc-son"].name["en"] == "Soc Son Commune"
    long_name = NOW.areas["hn-phuong-van-mieu-quoc-tu-giam"]
    assert long_name.name["vi"] == "Phường Văn Miếu - Quốc Tử Giám"


def test_official_codes_follow_the_decision_where_the_dataset_has_the_drafts() -> None:
    # vietnam-provinces gives Cửa Nam the draft's 00073; the decision as issued, 00082
    assert NOW.areas["hn-phuong-cua-nam"].geocode == (("GSO", "00082"),)
    assert NOW.areas["hn-phuong-van-mieu-quoc-tu-giam"].geocode == (("GSO", "00226"),)
    assert NOW.areas["hn-phuong-kim-lien"].geocode == (("GSO", "00229"),)
    codes = [a.geocode for a in NOW.areas.values() if a.depth == 3]
    assert len(set(codes)) == len(codes) == 126  # no two units share one


def test_former_districts_are_groupings_of_the_new_wards() -> None:
    district = NOW.areas["hn-ba-dinh"]
    assert district.depth == 2 and district.name["vi"] == "Quận Ba Đình (cũ)"
    assert {"hn-phuong-ba-dinh", "hn-phuong-ngoc-ha", "hn-phuong-giang-vo"} <= set(
        district.members)
    assert ("GSO", "00004") in district.geocode  # one official code per unit
    assert NOW.ancestors("hn-phuong-ngoc-ha")[0] == "hn-phuong-ngoc-ha"
    assert NOW.ancestors("hn-phuong-ngoc-ha")[-1] == "hn"
    assert "hn-ba-dinh" in NOW.ancestors("hn-phuong-ngoc-ha")
    assert NOW.contains("hn-ba-dinh", "hn-phuong-giang-vo")
    assert not NOW.contains("hn-phuong-giang-vo", "hn-ba-dinh")
    assert set(NOW.descendants("hn-ba-dinh")) == set(district.members)


def test_a_statement_reaches_every_area_sharing_ground_with_it() -> None:
    city = City(areas={}, departments={}, duty_officers={}, languages=NOW.languages,
                catalogs=NOW.catalogs)
    assert audience_areas(city, "hn-x") == ["hn-x"]  # unknown to the map: itself only
    ward = set(audience_areas(NOW, "hn-phuong-ngoc-ha"))
    assert ward == set(NOW.ancestors("hn-phuong-ngoc-ha"))
    grouping = set(audience_areas(NOW, "hn-ba-dinh"))
    members = set(NOW.areas["hn-ba-dinh"].members)
    assert {"hn", "hn-ba-dinh", *members} <= grouping
    sharing = {g for g, a in NOW.areas.items() if set(a.members) & members} - {"hn-ba-dinh"}
    assert sharing and sharing <= grouping  # groupings that share a unit
    far = {g for g, a in NOW.areas.items() if a.members and not set(a.members) & members}
    assert far and not far & grouping
    # In the 2019 tree: the area, those containing it, those inside it.
    assert audience_areas(OLD, "hn-ba-dinh-kim-ma") == ["hn-ba-dinh-kim-ma", "hn-ba-dinh",
                                                        "hn"]


def test_lists_offer_the_city_then_groupings_then_units_by_name() -> None:
    sections = NOW.area_map.sections("en")
    assert [label for label, _ in sections] == ["", "Groupings", "Wards and communes"]
    assert [a.code for a in sections[0][1]] == ["hn"]
    units = [a.name_in("en") for a in sections[2][1]]
    assert len(units) == 126
    assert units == sorted(units, key=lambda n: without_diacritics(n).casefold())
    assert units[0] == "An Khanh Commune"
    assert [label for label, _ in NOW.area_map.sections("vi")][1:] == ["Khu vực quen gọi",
                                                                     "Phường, xã"]
    old = OLD.area_map.sections("vi")  # a tree: one section, in the file's order
    assert len(old) == 1 and old[0][1][0].code == "hn" and old[0][1][1].code == "hn-ba-dinh"


def test_past_areas_keep_their_names() -> None:
    assert NOW.area_name("hn-ba-dinh-kim-ma", "vi") == "Phường Kim Mã"  # from hanoi-2019
    assert NOW.area_name("hn-phuong-ba-dinh", "en") == "Ba Dinh Ward"
    assert NOW.area_name("hn-atlantis", "vi") == "hn-atlantis"
    assert "hn-ba-dinh-kim-ma" in NOW.known_areas and "hn-ba-dinh-kim-ma" not in NOW.areas


def test_a_unit_inside_a_grouping_gets_the_groupings_playbook() -> None:
    playbooks = load_playbooks(REPO_ROOT / "playbooks", NOW)
    inside = select_playbook(playbooks, "flood", Severity.severe, "hn-phuong-hoan-kiem", NOW)
    assert inside.playbook_id == "flood-old-quarter"
    outside = select_playbook(playbooks, "flood", Severity.severe, "hn-xa-soc-son", NOW)
    assert outside.playbook_id == "flood"


def _config_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "config"
    shutil.copytree(CONFIG, copy)
    return copy


def _map_edited(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """A copy of config/ whose hanoi-2025.yaml has `old` (its first) replaced by `new`;
    (the copy, the line of the change)."""
    config = _config_copy(tmp_path)
    path = config / "maps" / "hanoi-2025.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return config, text[:text.index(old)].count("\n") + 1


def test_a_bad_grouping_is_named_by_line(tmp_path: Path) -> None:
    config, line = _map_edited(tmp_path, "hn-phuong-ngoc-ha,", "hn-phuong-nowhere,")
    with pytest.raises(ConfigError) as caught:
        load_area_map(config, NOW.languages)
    assert f"hanoi-2025.yaml:{line}: groupings[" in str(caught.value)
    assert "unknown unit 'hn-phuong-nowhere'" in str(caught.value)


def test_a_recoded_unit_the_dataset_lacks_is_named(tmp_path: Path) -> None:
    config, line = _map_edited(tmp_path, "    hn-phuong-cua-nam:", "    hn-phuong-cua-bac:")
    with pytest.raises(ConfigError, match=rf"hanoi-2025.yaml:{line}: units.recoded: unknown "
                                          r"unit 'hn-phuong-cua-bac'"):
        load_area_map(config, NOW.languages)


def test_a_grouping_code_given_twice_is_named(tmp_path: Path) -> None:
    config, line = _map_edited(tmp_path, "code: hn-hoan-kiem", "code: hn-ba-dinh")
    with pytest.raises(ConfigError, match=rf"hanoi-2025.yaml:{line}: groupings\[1\].code: "
                                          r"'hn-ba-dinh' is already an area"):
        load_area_map(config, NOW.languages)


def test_a_statement_of_an_earlier_map_is_under_the_whole_city() -> None:
    assert near(NOW, "hn", "hn-ba-dinh-kim-ma")
    assert near(NOW, "hn-ba-dinh-kim-ma", "hn-ba-dinh-kim-ma")
    assert not near(NOW, "hn-phuong-giang-vo", "hn-ba-dinh-kim-ma")
    assert near(NOW, "hn-ba-dinh", "hn-phuong-giang-vo")  # a grouping holding the ward
    assert near(NOW, "hn-dong-da", "hn-ba-dinh")  # groupings sharing Giảng Võ ward
    assert not near(NOW, "hn-long-bien", "hn-phuong-giang-vo")


def test_an_unknown_map_and_the_legacy_form(tmp_path: Path) -> None:
    config = _config_copy(tmp_path)
    with pytest.raises(ConfigError, match=r"no area map 'hanoi-1990'.*hanoi-2019, hanoi-2025"):
        load_area_map(config, NOW.languages, "hanoi-1990")
    # A config/areas.yaml of the old form (the tree itself) is the one map `areas`.
    shutil.copy(config / "maps" / "hanoi-2019.yaml", config / "areas.yaml")
    shutil.rmtree(config / "maps")
    legacy = load_city(config)
    assert legacy.area_map.name == "areas" and "hn-ba-dinh-kim-ma" in legacy.areas


def test_the_shipped_mapping_covers_every_old_area() -> None:
    old, new = OLD.area_map, NOW.area_map
    table = read_mapping(mapping_path(CONFIG, "hanoi-2019", "hanoi-2025"), old, new)
    assert table.targets("hn-ba-dinh-kim-ma") == ("hn-phuong-ba-dinh", "hn-phuong-ngoc-ha",
                                                  "hn-phuong-giang-vo")
    assert table.targets("hn-ba-dinh") == ("hn-ba-dinh",)  # a former district: a grouping
    assert table.targets("hn") == ("hn",)
    assert [code for code in old.areas if not table.targets(code)] == []
    # a ward moves into its district's grouping (Kim Giang, merged in 2024 into a ward our
    # sources do not name, to the grouping itself)
    assert table.targets("hn-thanh-xuan-kim-giang") == ("hn-thanh-xuan",)
    for code, targets in table.moves.items():
        district = old.areas[code].parent
        assert district is not None
        assert all(t in (district, *new.areas[district].members) for t in targets), code


def test_a_bad_mapping_file_names_each_line() -> None:
    old, new = OLD.area_map, NOW.area_map
    text = ("# comment\nfrom,to,share\nhn-ba-dinh-kim-ma,hn-phuong-ba-dinh,whole\n"
            "hn-nowhere,hn-phuong-ba-dinh,part\nhn-ba-dinh-kim-ma,hn-phuong-x,half\n")
    with pytest.raises(ConfigError) as caught:
        parse_mapping("m.csv", text, old, new)
    assert str(caught.value).splitlines() == [
        "m.csv:4: from: 'hn-nowhere' is not an area of hanoi-2019",
        "m.csv:5: to: 'hn-phuong-x' is not an area of hanoi-2025",
        "m.csv:5: share: 'half' is not whole or part",
    ]
    with pytest.raises(ConfigError, match=r"m.csv:1: the header lacks share"):
        parse_mapping("m.csv", "from,to\n", old, new)
    saved_by_excel = "\ufefffrom, to, share\nhn-ba-dinh-kim-ma,hn-phuong-ba-dinh,part\n"
    assert parse_mapping("m.csv", saved_by_excel, old, new).targets("hn-ba-dinh-kim-ma") == (
        "hn-phuong-ba-dinh",)
    table = parse_mapping("m.csv", "from,to,share\nhn-ba-dinh-kim-ma,hn-phuong-ba-dinh,part\n"
                          "hn-ba-dinh-kim-ma,hn-phuong-giang-vo,part\n", old, new)
    assert table.targets("hn-ba-dinh-kim-ma") == ("hn-phuong-ba-dinh", "hn-phuong-giang-vo")
    assert table.targets("hn-ba-dinh-ngoc-ha") == ()  # not named, not in the new map
    assert single(table, "hn-ba-dinh-kim-ma", {}) == (None, table.targets("hn-ba-dinh-kim-ma"))
    assert single(table, "hn-ba-dinh-kim-ma", {"hn-ba-dinh-kim-ma": "hn-phuong-giang-vo"})[0] \
        == "hn-phuong-giang-vo"
    assert single(table, "hn", {})[0] == "hn"


def test_playbook_lines_are_rewritten_in_place() -> None:
    assert _rewritten("  areas: [hn-a, hn-b-c]  # note\n", "hn-b-c", ["hn-x", "hn-y"]) == \
        "  areas: [hn-a, hn-x, hn-y]  # note\n"
    assert _rewritten("    - hn-b\n", "hn-b", ["hn-x", "hn-y"]) == "    - hn-x\n    - hn-y\n"
    assert _rewritten("  publish_for: [area:hn-b, department:x]\n", "area:hn-b",
                      ["area:hn-x"]) == "  publish_for: [area:hn-x, department:x]\n"
    # a code that only starts the same is left alone
    assert _rewritten("  areas: [hn-b-c]\n", "hn-b", ["hn-x"]) == "  areas: [hn-b-c]\n"
    # a commented item keeps its comment; a quoted one its quotes
    assert _rewritten("    - hn-b  # the old ward\n", "hn-b", ["hn-x", "hn-y"]) == \
        "    - hn-x  # the old ward\n    - hn-y\n"
    assert _rewritten('  areas: ["hn-b", hn-c]\n', "hn-b", ["hn-x", "hn-y"]) == \
        '  areas: ["hn-x", "hn-y", hn-c]\n'


def test_what_a_move_says() -> None:
    done = MoveReport(asked=True)  # asked to move, and refused: an incident has no one area
    done.subscribers[("hn-ba-dinh-kim-ma", ("hn-phuong-ba-dinh", "hn-phuong-ngoc-ha"))] = 2
    done.subscribers_unmapped["hn-atlantis"] = 1
    done.incidents_unmapped.append(("INC-00001", "hn-ba-dinh-kim-ma",
                                    ("hn-phuong-ba-dinh", "hn-phuong-ngoc-ha")))
    done.credentials.append(("desk", "hn-ba-dinh-truc-bach", "hn-phuong-ba-dinh"))
    assert done.blocked
    assert done.lines("hanoi-2019", "hanoi-2025") == [
        "subscribers: 2 of hn-ba-dinh-kim-ma would move to hn-phuong-ba-dinh, "
        "hn-phuong-ngoc-ha",
        "subscribers NOT moved: 1 of hn-atlantis (hanoi-2025 has no area for it: add it to "
        "the mapping file)",
        "incident INC-00001 NOT moved: hn-ba-dinh-kim-ma (split into hn-phuong-ba-dinh, "
        "hn-phuong-ngoc-ha: choose one with --choose hn-ba-dinh-kim-ma=hn-phuong-ba-dinh)",
        "credential desk: hn-ba-dinh-truc-bach -> hn-phuong-ba-dinh",
        "nothing moved: the data stays on hanoi-2019 until every open incident and "
        "credential has one area (--choose OLD=NEW)",
    ]
    assert MoveReport().lines("a", "b") == [
        "nothing names an area that b changes", "dry run: nothing changed; --apply moves it"]
