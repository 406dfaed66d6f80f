"""The Twilio and SMTP stand-ins (top-level `sandbox/`): their pure rules, and that they
stay apart from the product (neither imports the other)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sandbox.gsm7 import num_segments
from sandbox.twilio_rules import matches, status_plan, webhook_overrides

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("body", "parts"), [
    ("", 1), ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3),
    ("€" * 80, 1), ("€" * 81, 2),  # an extension character costs two septets
    ("ệ" * 70, 1), ("ệ" * 71, 2), ("ệ" * 134, 2), ("ệ" * 135, 3),  # UCS-2: 70, then 67
])
def test_segments_count_like_twilio(body: str, parts: int) -> None:
    """A body's SMS segment count follows Twilio's GSM-7 and UCS-2 limits."""
    assert num_segments(body) == parts


def test_webhook_overrides_are_read_from_the_fragment() -> None:
    """A webhook URL's fragment sets its retry count and policy; a bad value raises ValueError."""
    assert webhook_overrides("http://h/sms#rc=3&rp=all") == ("http://h/sms", 3,
                                                             frozenset({"all"}))
    assert webhook_overrides("http://h/sms") == ("http://h/sms", 1, frozenset({"ct"}))
    assert webhook_overrides("http://h/sms#rp=5xx,ct")[2] == frozenset({"5xx", "ct"})
    with pytest.raises(ValueError, match="rc must be 0 to 5"):
        webhook_overrides("http://h/sms#rc=6")
    with pytest.raises(ValueError, match="unknown retry policy"):
        webhook_overrides("http://h/sms#rp=sometimes")


def test_a_message_passes_twilios_statuses() -> None:
    """A message walks Twilio's statuses to delivered, undelivered or failed by error code."""
    assert status_plan("queued", None) == [("sent", None), ("delivered", None)]
    assert status_plan("accepted", None) == [("queued", None), ("sent", None),
                                             ("delivered", None)]
    assert status_plan("queued", 30003) == [("sent", None), ("undelivered", 30003)]
    assert status_plan("queued", 30006) == [("failed", 30006)]


def test_list_filters_by_number_and_day() -> None:
    """The message list filter matches To and DateSent, exactly or as a range."""
    message = {"to": "+84901", "from": "+1500", "date_sent": "Thu, 24 Aug 2023 05:01:45 +0000"}
    assert matches(message, {"To": "+84901"})
    assert not matches(message, {"To": "+84902"})
    assert matches(message, {"DateSent": "2023-08-24"})
    assert matches(message, {"DateSent<": "2023-08-24", "DateSent>": "2023-08-01"})
    assert not matches(message, {"DateSent>": "2023-08-25"})
    assert not matches({**message, "date_sent": None}, {"DateSent": "2023-08-24"})


def _imported_roots(package: str) -> set[str]:
    """The top-level packages the modules of `package` import."""
    roots: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                roots.add(node.module.split(".")[0])
    return roots


def test_the_sandbox_and_the_product_do_not_import_each_other() -> None:
    """sandbox/ imports neither coordinator nor channels, and neither of them imports sandbox."""
    assert {"coordinator", "channels"} & _imported_roots("sandbox") == set()
    assert "sandbox" not in _imported_roots("coordinator") | _imported_roots("channels")
