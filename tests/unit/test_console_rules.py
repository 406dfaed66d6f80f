"""Pure rules behind the console and the public pages."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from coordinator.accounts import AccountError, new_account
from coordinator.approvals.decisions import edited
from coordinator.city import load_city
from coordinator.events import Draft, RedraftRequested, RenderedText
from coordinator.incidents.actions import message_type, refusal
from coordinator.model.incident import draft_version, ids_for, incident_of_statement
from coordinator.settings import Settings
from coordinator.web.console import texts_from_form
from coordinator.web.login import safe_next
from coordinator.web.public import current, folded, near
from tests.conftest import FIXTURE_MAP


def test_draft_versions_come_from_the_draft_id() -> None:
    """A draft's version is the number after its id's last dash; no draft is version 0."""
    assert (draft_version("DRF-00042-3"), draft_version("")) == (3, 0)
    assert incident_of_statement("STM-00042-3") == "INC-00042"
    assert incident_of_statement(ids_for("INC-1234567", 12)[2]) == "INC-1234567"


@pytest.mark.parametrize(("purpose", "published", "expected"), [
    ("edit", [], "Alert"), ("reselect", [], "Alert"), ("update", ["STM-1-1"], "Update"),
    ("correction", ["STM-1-1"], "Update"), ("all_clear", ["STM-1-1"], "Cancel")])
def test_message_type_follows_what_is_public(purpose: str, published: list[str],
                                             expected: str) -> None:
    """A version is an Alert until something is public, then an Update, or a Cancel."""
    assert message_type(purpose, published) == expected


def _redraft(purpose: str, texts: bool = True) -> RedraftRequested:
    return RedraftRequested(
        id="act-1234567", incident_id="INC-00001", purpose=purpose,  # type: ignore[arg-type]
        actor="tran-thi-mai",
        texts=[RenderedText(channel="web", language="vi", body="x")] if texts else None)


def test_what_a_new_version_is_refused_for() -> None:
    """A new version is refused for a closed, unpublished or outgoing incident, or no text."""
    open_incident = {"status": "published"}
    assert refusal(_redraft("update"), open_incident, ["STM-1-1"]) is None
    assert "is closed" in (refusal(_redraft("update"), {"status": "closed"}, []) or "")
    assert "nothing has been published" in (
        refusal(_redraft("all_clear"), {"status": "awaiting_approval"}, []) or "")
    assert "needs its text" in (refusal(_redraft("edit", texts=False), open_incident, []) or "")
    assert refusal(_redraft("reselect", texts=False), open_incident, []) is None
    # approved and on its way out: the next version waits until it is public
    assert "is being published" in (refusal(_redraft("update"), {"status": "approved"}, [])
                                    or "")


def test_form_fields_become_texts_and_an_empty_body_is_named() -> None:
    """Form fields become sorted texts; an empty, long or unknown text is named in a 422."""
    texts = texts_from_form({"csrf": "t", "title:web:vi": " Tiêu đề ", "body:web:vi": "Nội dung",
                             "body:sms:en": "Short", "note": "n", "body:bad": "ignored"})
    assert [(t.channel, t.language, t.title, t.body) for t in texts] == [
        ("sms", "en", "", "Short"), ("web", "vi", "Tiêu đề", "Nội dung")]
    with pytest.raises(HTTPException) as empty:
        texts_from_form({"title:web:vi": "T", "body:web:vi": "  "})
    assert str(empty.value.detail).startswith("body:web:vi: the text may not be empty")
    with pytest.raises(HTTPException) as long:
        texts_from_form({"body:web:vi": "x" * 5001})
    assert str(long.value.detail).startswith("body:web:vi: at most 5000 characters, this has "
                                             "5001")
    with pytest.raises(HTTPException) as bad_channel:
        texts_from_form({"body:fax:vi": "x"})
    assert "fax:vi" in str(bad_channel.value.detail)


def test_a_version_is_added_in_a_declared_language_or_left_out_when_empty() -> None:
    """An `optional:` version left empty is dropped; one typed in a language the city does
    not declare is refused naming it; a draft's own version in such a language (a playbook
    the city no longer speaks) stays editable; an added SMS is held to the largest budget."""
    declared = ("vi", "en", "fr", "th")
    base = {"body:web:vi": "Nội dung", "body:web:es": "Contenido"}
    texts = texts_from_form({**base, "optional:web:fr": "1", "title:web:fr": "",
                             "body:web:fr": ""}, None, declared)
    assert [(t.channel, t.language) for t in texts] == [("web", "es"), ("web", "vi")]
    with pytest.raises(HTTPException) as undeclared:
        texts_from_form({**base, "optional:web:de": "1", "body:web:de": "Inhalt"}, None,
                        declared)
    assert str(undeclared.value.detail).startswith(
        "body:web:de: 'de' is not one of this city's languages (vi, en, fr, th)")
    with pytest.raises(HTTPException) as costly:
        texts_from_form({"body:sms:vi": "Ngập", "optional:sms:th": "1",
                         "body:sms:th": "น้ำท่วม" * 40}, {("sms", "vi"): 2}, declared)
    assert "over the playbook's budget of 2" in str(costly.value.detail)


def test_an_approvers_edit_replaces_only_the_texts_it_names() -> None:
    """An approver's edit replaces only the draft's own texts it names, recounting segments."""
    draft = Draft(id="DRF-00001-1", incident_id="INC-00001", playbook_id="flood", version=1,
                  texts=[RenderedText(channel="web", language="vi", title="A", body="old"),
                         RenderedText(channel="sms", language="vi", body="old sms",
                                      segments=1, segment_budget=2)])
    out = edited(draft, [RenderedText(channel="sms", language="vi", body="mới " * 60),
                         RenderedText(channel="email", language="fr", body="ignored")])
    assert out.texts[0] == draft.texts[0]
    assert out.texts[1].body == "mới " * 60 and out.texts[1].segments == 4
    assert out.texts[1].segment_budget == 2


def test_login_redirects_stay_on_this_site() -> None:
    """After login only a path on this site is followed; anything else goes to /console."""
    assert safe_next("/console/incidents/INC-00001") == "/console/incidents/INC-00001"
    for hostile in ("//evil.example/x", "https://evil.example", "/\\evil.example", ""):
        assert safe_next(hostile) == "/console"


def test_search_ignores_case_and_vietnamese_diacritics() -> None:
    """Search text is folded to lower case without Vietnamese diacritics."""
    assert folded("Ngập phố ĐỐNG ĐA") == "ngap pho dong da"


def test_a_statement_concerns_its_area_the_areas_inside_and_the_areas_around() -> None:
    """A statement concerns whoever picked its area, an area inside it or one containing it."""
    city = load_city(Settings().config_dir, FIXTURE_MAP)
    ward, district = "hn-ba-dinh-kim-ma", "hn-ba-dinh"
    assert near(city, ward, ward) and near(city, ward, district) and near(city, ward, "hn")
    assert near(city, district, ward)
    assert not near(city, ward, "hn-ba-dinh-dien-bien")
    assert not near(city, "hn-tay-ho", ward)


def test_the_front_page_keeps_the_newest_statement_of_each_incident() -> None:
    """The front page keeps only the newest statement of each incident."""
    newest_first = [{"id": "STM-2-1", "incident_id": "INC-2"},
                    {"id": "STM-1-2", "incident_id": "INC-1"},
                    {"id": "STM-1-1", "incident_id": "INC-1"}]
    assert [s["id"] for s in current(newest_first)] == ["STM-2-1", "STM-1-2"]


def test_accounts_must_match_the_people_in_config() -> None:
    """An account takes its name from config/; a person that does not fit is refused by field."""
    city = load_city(Settings().config_dir, FIXTURE_MAP)
    approver = new_account("an", "approver", "nguyen-van-an", city)
    assert (approver.name, approver.actor, approver.can_run_incidents) == (
        "Nguyễn Văn An", "nguyen-van-an", False)
    assert new_account("root", "admin", "", city).actor == "account:root"
    for args, field_message in [
            (("x", "approver", ""), "person: an approver account must name"),
            (("x", "approver", "nobody"), "person: no one with id 'nobody'"),
            (("x", "duty_officer", "nguyen-van-an"), "person: nguyen-van-an is not a duty"),
            (("Bad Name", "admin", ""), "username: 'Bad Name' must be")]:
        with pytest.raises(AccountError, match=field_message):
            new_account(*args, city)  # type: ignore[arg-type]


def test_a_translation_of_a_draft_rejected_meanwhile_is_refused() -> None:
    """The form offers only drafts awaiting a decision; one rejected between the form and
    the worker is refused there too (a duty officer brings it back, not a translator)."""
    translation = _redraft("edit").model_copy(update={"note": "translation"})
    assert refusal(translation, {"status": "awaiting_approval"}, []) is None
    assert refusal(translation, {"status": "returned"}, []) == (
        "INC-00001 is returned: only a draft awaiting a decision is translated")
    assert refusal(_redraft("edit"), {"status": "returned"}, []) is None  # a duty officer's
