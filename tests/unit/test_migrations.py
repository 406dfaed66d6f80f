"""The Redis layout's versions and migration steps, the pure parts: which steps are pending,
what the version says to an operator, and which contact index entries v1 -> v2 repairs."""

from __future__ import annotations

import pytest

from coordinator.cli.migrate import describe
from coordinator.keys import Keys
from coordinator.migrations import CURRENT, STEPS
from coordinator.migrations.runner import Migration, StepOutcome
from coordinator.migrations.step import Step
from coordinator.migrations.v1_to_v2 import ContactFixes, contact_index_fixes
from coordinator.migrations.version import (
    Layout,
    LayoutError,
    advice,
    literal_pattern,
    parse_version,
    pending,
)

OLD = Layout(1, stamped=False)  # data of the release before versions were kept


async def _nothing(redis: object, keys: Keys, apply: bool) -> list[str]:
    return []


def test_the_steps_lead_from_version_1_to_current_one_at_a_time() -> None:
    """Every version from 1 up has its step, in order, and the last one ends at CURRENT."""
    assert CURRENT == 3
    assert [(s.source, s.target, s.name) for s in STEPS] == [(1, 2, "v1_to_v2"),
                                                              (2, 3, "v2_to_v3")]
    assert pending(OLD, STEPS, CURRENT) == list(STEPS)


def test_a_layout_is_fresh_current_older_or_newer() -> None:
    """A layout's verdict is fresh, current, older or newer against this Loa's version."""
    assert [Layout(v, s).verdict(2) for v, s in [(None, False), (2, True), (1, False),
                                                  (1, True), (3, True)]] == [
        "fresh", "current", "older", "older", "newer"]


def test_nothing_is_pending_on_a_fresh_or_current_layout() -> None:
    """No step is pending for an empty layout or one already at the current version."""
    assert pending(Layout(None, stamped=False), STEPS, 2) == []
    assert pending(Layout(2, stamped=True), STEPS, 2) == []


def test_pending_steps_start_at_the_stored_version() -> None:
    """The pending steps begin at the stored version and run up to the target."""
    steps = [Step(v, f"step {v}", _nothing) for v in (1, 2, 3)]
    assert [s.name for s in pending(Layout(2, stamped=True), steps, 4)] == [
        "v2_to_v3", "v3_to_v4"]


def test_a_newer_layout_is_refused_with_the_reason() -> None:
    """A layout newer than this Loa raises a LayoutError telling the operator to upgrade."""
    with pytest.raises(LayoutError) as raised:
        pending(Layout(3, stamped=True), STEPS, 2)
    assert str(raised.value) == ("the Redis layout is version 3, newer than this Loa knows "
                                 "(2): a newer release wrote it; upgrade Loa, do not run "
                                 "this one")


def test_a_missing_step_is_an_error_not_a_skip() -> None:
    """A gap in the steps raises a LayoutError naming the missing versions."""
    with pytest.raises(LayoutError, match=r"no migration step from version\(s\) \[2\] to 3"):
        pending(OLD, [Step(1, "one", _nothing)], 3)


def test_the_advice_names_the_command_for_an_older_layout_only() -> None:
    """Only an older layout gets advice, and it names `loa migrate --apply`."""
    assert advice(OLD, 2) == ("the Redis layout is version 1, older than this Loa's 2: run "
                              "`loa migrate --apply` (see docs/upgrading.md)")
    assert advice(Layout(2, stamped=True), 2) == ""
    assert advice(Layout(None, stamped=False), 2) == ""


def test_the_layout_described_says_where_its_version_came_from() -> None:
    """The description tells a stamped version from an unstamped one and from an empty layout."""
    assert OLD.describe(2) == ("Redis layout: version 1 (no version key: written before "
                               "versions were kept); this Loa: version 2")
    assert Layout(2, stamped=True).describe(2) == "Redis layout: version 2; this Loa: version 2"
    assert Layout(None, stamped=False).describe(2) == (
        "Redis layout: empty (a fresh install is stamped version 2)")


@pytest.mark.parametrize("raw", ["", "two", "0", "-1", "1.5", " 2"])
def test_a_garbled_version_key_is_an_error(raw: str) -> None:
    """A version key that is not a plain positive integer raises a LayoutError."""
    with pytest.raises(LayoutError, match="not a version number"):
        parse_version(raw)


def test_a_version_key_reads_as_a_number() -> None:
    """A version key's digits parse to its integer version."""
    assert (parse_version("1"), parse_version("12")) == (1, 12)


def test_a_prefix_is_matched_literally_in_a_scan() -> None:
    """literal_pattern escapes a prefix's glob characters so a scan matches it literally."""
    assert literal_pattern("loa") == "loa"
    assert literal_pattern("a*b?[c]\\d") == "a\\*b\\?\\[c\\]\\\\d"


def test_the_version_key_lives_under_the_prefix() -> None:
    """The layout version key is `<prefix>:layout:version`."""
    assert Keys("loa").layout_version() == "loa:layout:version"


# --- v1 -> v2: the contact index ------------------------------------------------------------

def test_a_sound_index_needs_nothing() -> None:
    """A contact index that matches every record's contacts needs no fix."""
    index = {"+84901000001": "sub-a", "a@example.org": "sub-a", "+84901000002": "sub-b"}
    holders = {"sub-a": ["+84901000001", "a@example.org"], "sub-b": ["+84901000002"]}
    assert contact_index_fixes(index, holders, {"sub-a", "sub-b"}, []) == ContactFixes({}, {})


def test_an_entry_whose_record_lost_that_contact_is_dropped() -> None:
    """sub-a confirmed only its email before issue 10: its phone entry stayed behind."""
    index = {"+84901000001": "sub-a", "a@example.org": "sub-a"}
    holders = {"sub-a": ["a@example.org"]}
    assert contact_index_fixes(index, holders, {"sub-a"}, []) == ContactFixes(
        drop={"+84901000001": "sub-a"}, point={})


def test_an_entry_whose_record_is_gone_is_dropped() -> None:
    """An index entry leading to a subscriber that no longer exists is dropped."""
    assert contact_index_fixes({"x@example.org": "sub-gone"}, {}, set(), []) == ContactFixes(
        drop={"x@example.org": "sub-gone"}, point={})


def test_an_entry_of_an_unreadable_record_is_left_alone() -> None:
    """An index entry leading to an unreadable record is neither dropped nor moved."""
    assert contact_index_fixes({"x@example.org": "sub-odd"}, {}, set(), ["sub-odd"]) == (
        ContactFixes({}, {}))


def test_a_contact_freed_by_a_drop_leads_to_the_record_that_has_it() -> None:
    """sub-a once had b's email and lost it; sub-b has it: the entry moves to sub-b."""
    index = {"b@example.org": "sub-a", "+84901000001": "sub-a"}
    holders = {"sub-a": ["+84901000001"], "sub-b": ["b@example.org"]}
    assert contact_index_fixes(index, holders, {"sub-a", "sub-b"}, []) == ContactFixes(
        drop={"b@example.org": "sub-a"}, point={"b@example.org": "sub-b"})


def test_a_contact_without_an_entry_goes_to_an_active_record_first_then_the_lowest_id() -> None:
    """A contact with no entry is pointed at an active holder first, then the lowest id."""
    holders = {"sub-a": ["+84901000009"], "sub-b": ["+84901000009"], "sub-c": ["c@x.org"],
               "sub-d": ["c@x.org"]}
    assert contact_index_fixes({}, holders, {"sub-b", "sub-c", "sub-d"}, []) == ContactFixes(
        drop={}, point={"+84901000009": "sub-b", "c@x.org": "sub-c"})


def test_a_present_entry_leading_to_a_holder_is_kept_even_if_another_holds_it_too() -> None:
    """An entry already leading to one of the contact's holders is kept, whoever else holds it."""
    index = {"+84901000009": "sub-z"}
    holders = {"sub-a": ["+84901000009"], "sub-z": ["+84901000009"]}
    assert contact_index_fixes(index, holders, {"sub-a", "sub-z"}, []) == ContactFixes({}, {})


# --- what `loa migrate` prints ---------------------------------------------------------------

def test_a_dry_run_says_what_would_change_and_how_to_apply() -> None:
    """A dry run lists each change it would make and ends with how to apply them."""
    run = Migration(OLD, 2, applied=False, steps=[StepOutcome("v1_to_v2", "repair", [
        "contact index: remove the email entry leading to sub-a"])])
    assert describe(run) == [
        "Redis layout: version 1 (no version key: written before versions were kept); "
        "this Loa: version 2",
        "v1_to_v2: repair",
        "  would: contact index: remove the email entry leading to sub-a",
        "dry run: nothing changed; run `loa migrate --apply` to migrate"]


def test_an_applied_run_with_nothing_to_repair_says_so() -> None:
    """An applied step with no changes prints "no change needed" and the new version."""
    run = Migration(OLD, 2, applied=True, steps=[StepOutcome("v1_to_v2", "repair", [])])
    assert describe(run)[1:] == ["v1_to_v2: repair", "  no change needed", "now at version 2"]


def test_a_current_or_fresh_layout_has_nothing_to_do() -> None:
    """A current layout is up to date, and a fresh one is stamped only by `--apply`."""
    assert describe(Migration(Layout(2, True), 2, applied=True))[1:] == [
        "up to date: nothing to do"]
    assert describe(Migration(Layout(None, False), 2, applied=True, stamped_fresh=True))[1:] == [
        "stamped version 2"]
    assert describe(Migration(Layout(None, False), 2, applied=False))[1:] == [
        "nothing to migrate; `--apply` stamps the version"]
