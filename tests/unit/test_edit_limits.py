"""An edited text is refused when it is made if no channel could carry it, naming it."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from coordinator.web.console import texts_from_form


def refusal(form: dict[str, str], budgets: dict[tuple[str, str], int] | None = None) -> str:
    """The 422 detail with which the edit form `form` is refused."""
    with pytest.raises(HTTPException) as caught:
        texts_from_form(form, budgets)
    assert caught.value.status_code == 422
    return str(caught.value.detail)


def test_an_sms_past_twilios_limit_is_refused_naming_it() -> None:
    """1,601 characters on `sms:vi` is more than Twilio takes."""
    assert refusal({"body:sms:vi": "a" * 1601}) == (
        "body:sms:vi: an SMS takes at most 1600 characters (Twilio's limit), this has 1601 "
        "(go back to shorten it)")


def test_an_sms_over_the_playbooks_budget_is_refused_naming_it() -> None:
    """Vietnamese is UCS-2: 71 characters are 2 segments, over a budget of 1."""
    assert refusal({"body:sms:vi": "ă" * 71}, {("sms", "vi"): 1}) == (
        "body:sms:vi: 2 SMS segments, over the playbook's budget of 1 (go back to shorten it)")


def test_texts_within_their_limits_pass() -> None:
    """Within the budget, and web text of any SMS length, are taken."""
    texts = texts_from_form({"body:sms:vi": "ă" * 70, "title:web:vi": "T",
                             "body:web:vi": "b" * 3000}, {("sms", "vi"): 1})
    assert [(t.channel, t.language, len(t.body)) for t in texts] == [
        ("sms", "vi", 70), ("web", "vi", 3000)]
