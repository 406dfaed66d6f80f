"""Playbooks are refused at load with file, line and field named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.city import City
from coordinator.errors import PlaybookError
from coordinator.playbooks.loader import check_playbook_file, load_playbooks
from tests.conftest import PLAYBOOKS_DIR

GOOD = """\
version: 1
id: {name}
title: "Test flood"
match:
  kinds: [flood]
  min_severity: moderate
approval:
  department: construction
  chain:
    - level: 1
      within: 15m
    - level: 2
      within: {second_within}
channels: [web, sms]
languages: [vi, en]
templates:
  vi:
    web:
      title: "Ngập tại {{{{ area.name }}}}"
      body: "{{{{ incident.title }}}}"
    sms:
      text: "Ngập tại {{{{ area.name }}}}"
      segment_budget: 3
  en:
    web:
      title: "Flood in {{{{ area.name }}}}"
      body: "{{{{ incident.title }}}}"
    sms:
      text: "Flood in {{{{ area.name }}}}"
"""

Write = Callable[[str, str], Path]


def good(name: str = "flood-test", second_within: str = "10m") -> str:
    """The GOOD playbook text, named `name`, its second level lasting `second_within`."""
    return GOOD.format(name=name, second_within=second_within)


@pytest.mark.parametrize("path", sorted(PLAYBOOKS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_playbook_validates(path: Path, city: City) -> None:
    """Each playbook that ships with Loa loads without a single problem."""
    playbook, problems = check_playbook_file(path, city)
    assert problems == []
    assert playbook is not None and playbook.id == path.stem


def test_the_shipped_set_covers_the_required_situations(city: City) -> None:
    """Flood, fire, outage, health, infrastructure and misinformation all have a playbook,
    and so does the fallback."""
    playbooks = load_playbooks(PLAYBOOKS_DIR, city)
    kinds = {k for p in playbooks.values() if p.match for k in p.match.kinds}
    assert {"flood", "fire", "power-outage", "water-outage", "outbreak", "food-poisoning",
            "collapse", "misinformation"} <= kinds
    assert [p.id for p in playbooks.values() if p.fallback] == ["fallback"]
    assert all({"vi", "en"} <= set(p.languages) for p in playbooks.values())


def test_a_good_playbook_has_no_problems(playbook_file: Write, city: City) -> None:
    """The template used by the failure cases below is itself valid."""
    _, problems = check_playbook_file(playbook_file("flood-test", good()), city)
    assert problems == []


def test_a_bad_duration_names_file_line_and_field(playbook_file: Write, city: City) -> None:
    """`within: "15 mins"` at line 14 reads as in the issue's example."""
    path = playbook_file("flood-test", good(second_within='"15 mins"'))
    _, problems = check_playbook_file(path, city)
    assert problems == [
        f'{path}:13: approval.chain[1].within: "15 mins" is not a duration '
        "(use e.g. 30s, 10m, 2h, 1h30m)"
    ]


def test_an_unknown_field_is_named(playbook_file: Write, city: City) -> None:
    """A typo in a key is an error on that key's line, not silently ignored."""
    text = good().replace("  min_severity: moderate", "  min_severty: moderate")
    path = playbook_file("flood-test", text)
    _, problems = check_playbook_file(path, city)
    assert problems == [f"{path}:6: match.min_severty: unknown field"]


def test_a_bad_severity_is_named(playbook_file: Write, city: City) -> None:
    """An enum value outside the list names the field and the allowed values."""
    path = playbook_file("flood-test", good().replace("min_severity: moderate",
                                                      "min_severity: catastrophic"))
    _, problems = check_playbook_file(path, city)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:6: match.min_severity: Input should be 'minor'")


def test_a_missing_section_is_named(playbook_file: Write, city: City) -> None:
    """Leaving out `channels` says that `channels` is required."""
    path = playbook_file("flood-test", good().replace("channels: [web, sms]\n", ""))
    _, problems = check_playbook_file(path, city)
    assert problems == [f"{path}:1: channels: is required"]


def test_an_unknown_department_is_named(playbook_file: Write, city: City) -> None:
    """A department that config/ does not know is refused on its line."""
    path = playbook_file("flood-test", good().replace("department: construction",
                                                      "department: ministry-of-magic"))
    _, problems = check_playbook_file(path, city)
    assert f"{path}:8: approval.department: unknown department 'ministry-of-magic'" in problems


def test_an_unknown_area_is_named(playbook_file: Write, city: City) -> None:
    """An area code missing from config/areas.yaml is refused."""
    text = good().replace("  min_severity: moderate\n",
                          "  min_severity: moderate\n  areas: [hn-atlantis]\n")
    path = playbook_file("flood-test", text)
    _, problems = check_playbook_file(path, city)
    assert problems == [f"{path}:7: match.areas[0]: unknown area 'hn-atlantis'"]


def test_a_kind_the_city_does_not_take_is_named(playbook_file: Write, city: City) -> None:
    """A kind missing from config/kinds.yaml is refused on its line."""
    path = playbook_file("flood-test", good().replace("kinds: [flood]", "kinds: [flood, lava]"))
    _, problems = check_playbook_file(path, city)
    assert problems == [f"{path}:5: match.kinds[1]: unknown kind 'lava' (config/kinds.yaml)"]


def test_publish_on_exhaustion_must_name_whom_it_trusts(playbook_file: Write, city: City
                                                       ) -> None:
    """`on_exhausted: publish` without `publish_for` is refused; a scope that config/ does not
    know is named."""
    bare = good().replace("  chain:\n", "  on_exhausted: publish\n  chain:\n", 1)
    _, problems = check_playbook_file(playbook_file("flood-test", bare), city)
    assert len(problems) == 1 and "on_exhausted: publish needs publish_for" in problems[0]
    unknown = good().replace("  chain:\n", "  on_exhausted: publish\n"
                             "  publish_for: [department:ministry-of-magic]\n  chain:\n", 1)
    path = playbook_file("flood-test", unknown)
    _, problems = check_playbook_file(path, city)
    assert problems == [f"{path}:10: approval.publish_for[0]: unknown department "
                        "'ministry-of-magic'"]


def test_a_missing_language_template_is_named(playbook_file: Write, city: City) -> None:
    """A language listed without templates for every channel is refused."""
    text = good().replace('      text: "Flood in {{ area.name }}"\n', "").replace(
        "    sms:\n\n", "")
    text = text[: text.rindex("    sms:")]
    path = playbook_file("flood-test", text)
    _, problems = check_playbook_file(path, city)
    assert problems == [f"{path}:24: templates.en.sms: is missing (the playbook sends sms in en)"]


def test_an_undefined_template_variable_is_refused(playbook_file: Write, city: City) -> None:
    """StrictUndefined: a template using a variable that does not exist fails validation."""
    path = playbook_file("flood-test", good().replace("{{ incident.title }}",
                                                      "{{ incident.headline }}", 1))
    _, problems = check_playbook_file(path, city)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:20: templates.vi.web.body:")
    assert "headline" in problems[0]


def test_an_sms_over_its_segment_budget_is_refused(playbook_file: Write, city: City) -> None:
    """The worst case of an SMS template is counted against its budget (UCS-2 for Vietnamese)."""
    long_text = "Ngập sâu tại {{ area.name }}: {{ incident.title }}. " * 3
    text = good().replace('      text: "Ngập tại {{ area.name }}"\n      segment_budget: 3',
                          f'      text: "{long_text}"\n      segment_budget: 1')
    path = playbook_file("flood-test", text)
    _, problems = check_playbook_file(path, city)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:21: templates.vi.sms: worst case (a drill's, ")
    assert problems[0].endswith("segments, over the budget of 1")


def test_a_drills_mark_counts_against_the_budget(playbook_file: Write, city: City) -> None:
    """69 UCS-2 characters fit one segment; a drill's "[DIỄN TẬP] " makes them 80, two."""
    fits = ("Ngập sâu. " * 7).strip()
    assert len(fits) == 69
    text = good().replace('      text: "Ngập tại {{ area.name }}"\n      segment_budget: 3',
                          f'      text: "{fits}"\n      segment_budget: 1')
    _, problems = check_playbook_file(playbook_file("flood-test", text), city)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "templates.vi.sms: worst case (a drill's, with its mark) takes 2 segments, over the "
        "budget of 1"]


def test_broken_yaml_names_the_line(playbook_file: Write, city: City) -> None:
    """A YAML syntax error is reported with its line."""
    path = playbook_file("flood-test", good().replace("  kinds: [flood]", "  kinds: [flood"))
    _, problems = check_playbook_file(path, city)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:6: not valid YAML:")


def test_the_id_must_match_the_file_name(playbook_file: Write, city: City) -> None:
    """`id` and file name agree, so `loa show` and the folder never disagree."""
    path = playbook_file("flood-test", good(name="flood-other"))
    _, problems = check_playbook_file(path, city)
    assert problems == [f"{path}:2: id: 'flood-other' must equal the file name 'flood-test'"]


def test_loading_a_folder_lists_every_problem(tmp_path: Path, city: City) -> None:
    """load_playbooks raises one PlaybookError listing the problems of every file."""
    (tmp_path / "a.yaml").write_text(good(name="a", second_within="soon"), encoding="utf-8")
    (tmp_path / "b.yaml").write_text("version: 2\n", encoding="utf-8")
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path, city)
    problems = caught.value.problems
    first = f"{tmp_path / 'a.yaml'}:13: approval.chain[1].within"
    assert any(p.startswith(first) for p in problems)
    assert any(p.startswith(f"{tmp_path / 'b.yaml'}:1: version:") for p in problems)
