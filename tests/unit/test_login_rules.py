"""Pure rules behind console logins: TOTP codes, sealed secrets, the client's address
behind proxies, and how long an account waits after failed logins."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from coordinator.logins import account_wait_s
from coordinator.second_factor import (
    SealError,
    code_at,
    enrolment_uri,
    matching_step,
    seal,
    step_at,
    unseal,
)
from coordinator.settings import Settings
from coordinator.web.security import client_address

# RFC 6238, appendix B: the SHA-1 secret "12345678901234567890" (here in base32); the
# 6-digit codes are the last six digits of the RFC's 8-digit ones.
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
KEY = bytes(range(32))


@pytest.mark.parametrize(("now", "code"), [
    (59, "287082"), (1111111109, "081804"), (1111111111, "050471"), (1234567890, "005924"),
    (2000000000, "279037"), (20000000000, "353130")])
def test_codes_are_those_of_rfc_6238(now: int, code: str) -> None:
    """The codes of the RFC's test vectors, at their times."""
    assert code_at(RFC_SECRET, step_at(now)) == code
    assert matching_step(RFC_SECRET, code, now) == step_at(now)


def test_a_code_is_good_one_step_either_side_and_no_further() -> None:
    """The code of step 1 (t = 30..59 s) matches at steps 0, 1 and 2, not at 3."""
    assert [matching_step(RFC_SECRET, "287082", now) for now in (0, 30, 89, 90)] == [
        1, 1, 1, None]


def test_a_malformed_code_matches_nothing_and_spaces_are_ignored() -> None:
    """Apps show `287 082`; five digits, letters or an empty field never match."""
    assert matching_step(RFC_SECRET, " 287 082 ", 59) == 1
    for typed in ("28708", "2870820", "abcdef", "", "287O82"):
        assert matching_step(RFC_SECRET, typed, 59) is None


def test_the_enrolment_uri_names_loa_and_the_account() -> None:
    """What an authenticator app is given."""
    assert enrolment_uri(RFC_SECRET, "mai") == (
        f"otpauth://totp/Loa:mai?secret={RFC_SECRET}&issuer=Loa")


def test_a_sealed_secret_opens_only_for_its_account_and_key() -> None:
    """Sealed secrets differ each time, open with the same key and username, and with
    nothing else."""
    first, second = seal(KEY, "mai", RFC_SECRET), seal(KEY, "mai", RFC_SECRET)
    assert first != second and RFC_SECRET not in first
    assert unseal(KEY, "mai", first) == RFC_SECRET
    for key, username, sealed in [(bytes(32), "mai", first), (KEY, "huy", first),
                                  (KEY, "mai", first[:-2] + "AA"), (KEY, "mai", "v1.xyz"),
                                  (KEY, "mai", "plain")]:
        with pytest.raises(SealError):
            unseal(key, username, sealed)


def test_an_account_waits_only_after_ten_failures_and_never_over_a_minute() -> None:
    """0 for the first ten failures, then 5, 10, 20, 40 and 60 seconds from then on."""
    assert [account_wait_s(n) for n in (0, 1, 10, 11, 12, 13, 14, 15, 16, 100)] == [
        0, 0, 0, 5, 10, 20, 40, 60, 60, 60]


PROXIES = [ip_network("10.0.0.1/32"), ip_network("172.16.0.0/12"), ip_network("fd00::/8")]


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    # no trusted proxy in between: X-Forwarded-For is whatever the client wrote
    ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),
    ("10.0.0.2", ["1.2.3.4"], "10.0.0.2"),
    # one trusted proxy: the address it appended
    ("10.0.0.1", ["198.51.100.7"], "198.51.100.7"),
    # a client forging a chain: only the right-most untrusted address counts
    ("10.0.0.1", ["1.2.3.4, 198.51.100.7"], "198.51.100.7"),
    # two proxies, and the header split over two lines
    ("10.0.0.1", ["6.6.6.6, 198.51.100.7", "172.20.1.1"], "198.51.100.7"),
    ("fd00::5", ["2001:db8::1"], "2001:db8::1"),
    # the proxy said nothing (or nothing usable): the last trusted hop is the client
    ("10.0.0.1", [], "10.0.0.1"),
    ("10.0.0.1", ["172.20.1.1"], "172.20.1.1"),
    ("10.0.0.1", ["garbage, 172.20.1.1"], "172.20.1.1"),
    ("10.0.0.1", ["198.51.100.7:4711"], "10.0.0.1"),
    ("testclient", ["1.2.3.4"], "testclient"),
])
def test_the_client_is_the_right_most_address_no_trusted_proxy_wrote(
        peer: str, forwarded: list[str], client: str) -> None:
    """X-Forwarded-For is believed only as far as trusted proxies wrote it."""
    assert client_address(peer, forwarded, PROXIES) == client


def test_trusted_proxies_are_read_comma_separated() -> None:
    """LOA_TRUSTED_PROXIES takes IPs and CIDRs; a host address with a prefix is refused."""
    settings = Settings(trusted_proxies="10.0.0.1, 172.16.0.0/12,fd00::/8")  # type: ignore[arg-type]
    assert settings.trusted_proxies == PROXIES
    assert Settings().trusted_proxies == []
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(trusted_proxies="10.0.0.1/8")  # type: ignore[arg-type]
