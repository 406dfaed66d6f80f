"""Subscriber ids are random and say nothing of the contact; the CSV format keeps them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coordinator.city import load_city
from coordinator.settings import Settings
from coordinator.subscribers.csvio import parse_csv, to_csv
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.store import canonical_id, canonical_number
from tests.conftest import FIXTURE_MAP

PHONE = "+84911222333"


def test_a_new_id_names_the_number_and_nothing_of_the_person() -> None:
    """`sub-n` and the registry's number; any other id names no number of its own."""
    assert (canonical_id(42), canonical_number("sub-n42")) == ("sub-n42", 42)
    assert [canonical_number(i) for i in ("sub-0123456789abcdef", "sub-n0", "sub-n4x", "n4")
            ] == [None, None, None, None]
    assert Subscriber(id=canonical_id(7), phone=PHONE, areas=["hn"], channels=["sms"]).id \
        == "sub-n7"


def test_a_subscriber_made_from_a_contact_has_no_id_until_registered() -> None:
    """Nothing is derived from the phone: the id stays empty for the registry to give."""
    sub = Subscriber(phone="0911 222 333", areas=["hn"], channels=["sms"])
    assert (sub.phone, sub.id) == (PHONE, "")


def test_an_id_that_could_escape_its_redis_key_is_refused() -> None:
    """Ids are `sub-` and lower-case letters, digits or dashes."""
    for bad in ("sub-../x", "sub-a:b", "x-1", "sub-"):
        with pytest.raises(ValidationError, match="id"):
            Subscriber(id=bad, phone=PHONE, areas=["hn"], channels=["sms"])


def test_the_csv_export_carries_the_id_and_the_import_keeps_it() -> None:
    """The id column carries it; a row without one gets none (the registry decides). The
    drill opt-in and test lists come after, so files of older versions still import."""
    city = load_city(Settings().config_dir, FIXTURE_MAP)
    sub = Subscriber(id="sub-0123456789abcdef", phone=PHONE, areas=["hn"], channels=["sms"],
                     consent_source="import:a.csv", drills=True, lists=["press-office", "qa"],
                     language="vi")
    text = to_csv([sub])
    assert text.splitlines() == [
        "phone,email,language,areas,topics,channels,role,status,id,drills,lists",
        "+84911222333,,vi,hn,*,sms,resident,active,sub-0123456789abcdef,yes,press-office;qa"]
    [(line, parsed, why)] = list(parse_csv(text, city, source="import:a.csv"))
    assert (line, why) == (2, "")
    assert parsed is not None
    assert parsed.model_dump(exclude={"consent_at"}) == sub.model_dump(exclude={"consent_at"})
    [(_, no_id, _)] = list(parse_csv("phone,areas,channels\n0911222333,hn,sms\n", city))
    assert no_id is not None and no_id.id == ""
