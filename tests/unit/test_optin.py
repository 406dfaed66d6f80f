"""Double opt-in, the pure parts: codes (HMAC, expiry, wrong tries), confirmation links,
what the form asks for, and what a confirmation makes of a subscriber."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from coordinator.city import load_city
from coordinator.settings import Settings
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.optin import (
    NO_CONTACT,
    applied_subscriber,
    code_sms,
    parse_contact,
    requested_subscriber,
)
from coordinator.subscribers.proofs import (
    CODE_TTL_S,
    MAX_TRIES,
    ConfirmClaims,
    InvalidConfirmLink,
    StoredCode,
    check_code,
    code_mac,
    new_code,
    sign_confirm,
    verify_confirm,
)
from tests.conftest import FIXTURE_MAP

SECRET = "unit-secret"
PHONE = "+84911222333"
T0 = 1_800_000_000.0
NOW = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
AREAS = {"hn", "hn-ba-dinh", "hn-ba-dinh-kim-ma", "hn-tay-ho"}
KINDS = {"flood", "fire"}
CITY = load_city(Settings(_env_file=None).config_dir, FIXTURE_MAP)  # type: ignore[call-arg]
LANGUAGES = CITY.languages.tags


def words(language: str) -> Callable[[str], str]:
    """A language's catalog, as the web gives it to the messages."""
    return CITY.catalogs.of(language).gettext


def stored(code: str = "123456", tries: int = 0, purpose: str = "join") -> StoredCode:
    """A stored join code for PHONE (123456 unless `code`) expiring at T0 + 15 min."""
    return StoredCode(code_mac(SECRET, purpose, PHONE, code), T0 + CODE_TTL_S, tries, "sub-1")


def test_new_codes_are_six_digits_and_vary() -> None:
    """New codes are six random digits: 200 draws give more than 150 codes."""
    codes = {new_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(codes) > 150


def test_the_right_code_passes_and_spaces_do_not_matter() -> None:
    """The right code passes, also typed with spaces inside and around it."""
    assert check_code(stored(), SECRET, "join", PHONE, "123456", T0).outcome == "ok"
    assert check_code(stored(), SECRET, "join", PHONE, " 123 456 ", T0 + 60).outcome == "ok"


def test_the_code_is_kept_as_an_hmac_bound_to_purpose_and_phone() -> None:
    """Only an HMAC of the code is kept; another purpose, phone or secret fails."""
    code = stored()
    assert "123456" not in code.mac
    assert check_code(code, SECRET, "leave", PHONE, "123456", T0).outcome == "wrong"
    assert check_code(code, SECRET, "join", "+84911222334", "123456", T0).outcome == "wrong"
    assert check_code(code, "other-secret", "join", PHONE, "123456", T0).outcome == "wrong"


def test_a_code_expires_after_fifteen_minutes() -> None:
    """A code passes until 15 minutes after it was sent, then is expired."""
    assert CODE_TTL_S == 15 * 60
    assert check_code(stored(), SECRET, "join", PHONE, "123456",
                      T0 + CODE_TTL_S - 1).outcome == "ok"
    expired = check_code(stored(), SECRET, "join", PHONE, "123456", T0 + CODE_TTL_S)
    assert expired.outcome == "expired"


def test_five_wrong_tries_end_the_code() -> None:
    """Each wrong try counts down; the fifth ends the code, right or not after."""
    assert MAX_TRIES == 5
    lefts = []
    for tries in range(MAX_TRIES):
        check = check_code(stored(tries=tries), SECRET, "join", PHONE, "000000", T0)
        lefts.append((check.outcome, check.tries_left))
    assert lefts == [("wrong", 4), ("wrong", 3), ("wrong", 2), ("wrong", 1), ("exhausted", 0)]
    # after the fifth wrong try even the right code is refused
    assert check_code(stored(tries=MAX_TRIES), SECRET, "join", PHONE, "123456",
                      T0).outcome == "exhausted"
    assert check_code(stored(tries=4), SECRET, "join", PHONE, "123456", T0).outcome == "ok"


def test_no_code_and_a_damaged_record_are_missing() -> None:
    """No stored code, or a damaged stored record, reads as a missing code."""
    assert check_code(None, SECRET, "join", PHONE, "123456", T0).outcome == "missing"
    assert StoredCode.from_hash({}) is None
    assert StoredCode.from_hash({"mac": "x", "expires": "soon"}) is None
    code = stored(tries=2)
    assert StoredCode.from_hash(code.to_hash()) == code


def test_confirmation_links_are_signed_and_expire() -> None:
    """A confirmation link verifies with its secret until it expires; forgeries fail."""
    claims = ConfirmClaims("sub-1", "dan@mail.example", "nonce1", NOW + timedelta(days=3))
    token = sign_confirm(SECRET, claims)
    assert verify_confirm(SECRET, token, NOW) == claims
    with pytest.raises(InvalidConfirmLink, match="expired"):
        verify_confirm(SECRET, token, NOW + timedelta(days=3))
    with pytest.raises(InvalidConfirmLink, match="not valid"):
        verify_confirm("other-secret", token, NOW)
    payload, _, mac = token.partition(".")
    forged = sign_confirm(SECRET, ConfirmClaims("sub-2", "x@mail.example", "n",
                                                NOW + timedelta(days=3))).partition(".")[0]
    with pytest.raises(InvalidConfirmLink):
        verify_confirm(SECRET, f"{forged}.{mac}", NOW)
    with pytest.raises(InvalidConfirmLink):
        verify_confirm(SECRET, payload, NOW)
    with pytest.raises(InvalidConfirmLink):
        verify_confirm(SECRET, "garbage", NOW)


def test_the_form_names_every_problem_by_field() -> None:
    """The subscribe form's checks name every problem under the field it is in."""
    sub, errors = requested_subscriber("not-a-phone", "nope@", "es", ["hn-atlantis"],
                                       ["tsunami"], AREAS, KINDS, LANGUAGES)
    assert sub is None
    assert set(errors) == {"phone", "email", "language", "areas", "topics"}
    assert "hn-atlantis" in errors["areas"] and "tsunami" in errors["topics"]
    _, errors = requested_subscriber("", " ", "vi", [], [], AREAS, KINDS, LANGUAGES)
    assert errors == {"contact": NO_CONTACT, "areas": "Choose at least one area."}
    # in the reader's language, from its catalog
    _, errors = requested_subscriber("", " ", "fr", [], [], AREAS, KINDS, LANGUAGES,
                                     _=CITY.catalogs.of("fr").gettext)
    assert errors == {"contact": "Indiquez un numéro de téléphone ou une adresse e-mail.",
                      "areas": "Choisissez au moins une zone."}


def test_the_form_makes_a_pending_subscriber_with_the_channels_given() -> None:
    """A valid form makes a pending web subscriber with a channel per contact given."""
    sub, errors = requested_subscriber("0911 222 333", "Dan@Mail.example", "en",
                                       ["hn-ba-dinh", "hn-tay-ho", "hn-ba-dinh"], [],
                                       AREAS, KINDS, LANGUAGES)
    assert errors == {} and sub is not None
    assert (sub.phone, sub.email, sub.channels) == (PHONE, "Dan@mail.example", ["sms", "email"])
    assert sub.status == "pending" and sub.consent_source == "web"
    assert sub.areas == ["hn-ba-dinh", "hn-tay-ho"] and sub.topics == ["*"]
    only_mail, _ = requested_subscriber("", "dan@mail.example", "vi", ["hn"], ["flood", "*"],
                                        AREAS, KINDS, LANGUAGES)
    assert only_mail is not None and only_mail.channels == ["email"]
    assert only_mail.topics == ["*"]
    fire, _ = requested_subscriber(PHONE, "", "vi", ["hn"], ["fire"], AREAS, KINDS, LANGUAGES)
    assert fire is not None and fire.topics == ["fire"] and fire.channels == ["sms"]


def test_a_confirmation_activates_only_the_proven_channels() -> None:
    """A confirmation activates only the channels proven, never someone else's."""
    wanted = Subscriber(id="sub-1", phone=PHONE, email="dan@mail.example", areas=["hn"],
                        channels=["sms", "email"], status="pending", consent_source="web")
    assert applied_subscriber(wanted, [], None, NOW) is None
    by_sms = applied_subscriber(wanted, ["sms"], None, NOW)
    assert by_sms is not None
    assert (by_sms.status, by_sms.channels, by_sms.email) == ("active", ["sms"], None)
    assert by_sms.consent_at == NOW and by_sms.consent_source == "web"
    both = applied_subscriber(wanted, ["sms", "email"], None, NOW)
    assert both is not None and both.channels == ["sms", "email"]
    # An active subscriber who proves one of their own contacts keeps the other channel...
    active = Subscriber(id="sub-1", phone=PHONE, email="dan@mail.example", areas=["hn-tay-ho"],
                        channels=["sms", "email"], status="active")
    kept = applied_subscriber(wanted, ["sms"], active, NOW)
    assert kept is not None and kept.id == "sub-1"
    assert kept.channels == ["sms", "email"] and kept.areas == ["hn"]
    # ...but proving only a phone that is not theirs takes over nothing: the victim's
    # record (found by the typed email) is left alone and the phone gets a record of its own.
    victim = Subscriber(id="sub-victim", phone="+84911999888", email="dan@mail.example",
                        areas=["hn-tay-ho"], channels=["sms", "email"], status="active")
    own = applied_subscriber(wanted.model_copy(update={"id": "sub-victim"}), ["sms"], victim,
                             NOW)
    assert own is not None and own.id != "sub-victim"
    assert (own.phone, own.email, own.channels) == (PHONE, None, ["sms"])
    # Nor is a channel carried over from someone who opted out, or a changed address.
    out = victim.model_copy(update={"status": "opted_out", "phone": PHONE})
    gone = applied_subscriber(wanted, ["sms"], out, NOW)
    assert gone is not None and gone.channels == ["sms"]
    other = active.model_copy(update={"email": "old@mail.example"})
    changed = applied_subscriber(wanted, ["sms"], other, NOW)
    assert changed is not None and changed.channels == ["sms"] and changed.id == "sub-1"


def test_one_field_takes_a_phone_or_an_email() -> None:
    """The leave form's one field reads a phone or an email; anything else fails."""
    assert parse_contact(" 0911 222 333 ") == ("sms", PHONE)
    assert parse_contact("Dan@Mail.example") == ("email", "Dan@mail.example")
    for bad in ("", "not-a-phone", "a@"):
        with pytest.raises(ValueError):
            parse_contact(bad)


def test_the_code_sms_says_what_it_is_for() -> None:
    """The code SMS gives the code, what it is for and how long it lasts, in the language."""
    assert code_sms("123456", "join", words("vi")) == (
        "[Loa] Mã xác nhận đăng ký nhận tin Loa: 123456 (hiệu lực 15 phút). "
        "Bỏ qua tin này nếu bạn không yêu cầu.")
    assert code_sms("123456", "join", words("en")) == (
        "[Loa] Your code to subscribe to Loa updates: 123456 (valid 15 min). "
        "Ignore this SMS if you did not ask for it.")
    assert code_sms("123456", "leave", words("en")) == (
        "[Loa] Your code to stop Loa updates: 123456 (valid 15 min). "
        "Ignore this SMS if you did not ask for it.")
