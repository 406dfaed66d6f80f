"""How the SMS status sweep files each provider's answer (``status_sweep.Swept.file``):
pure, with exact values."""

from __future__ import annotations

import pytest

from channels.base import StatusReport
from coordinator.dispatch.status_sweep import Swept


@pytest.mark.parametrize(("answer", "applied", "filed", "ask_again"), [
    # the answer moved the record on: to an ending, or to `sent` (asked again later)
    (StatusReport("delivered", ""), ("d-1", True, "delivered"), "moved", False),
    (StatusReport("sent", ""), ("d-1", True, "sent"), "moved", True),
    # a callback brought the ending while the provider was asked: settled, whatever the
    # (older) answer says
    (StatusReport("delivered", ""), ("d-1", False, "delivered"), "settled", False),
    (StatusReport("sent", ""), ("d-1", False, "undelivered"), "settled", False),
    # neither the answer nor a callback got it further, and not final: asked again
    (StatusReport("queued", ""), ("d-1", False, "queued"), "waiting", True),
    # its provider id, or its record, is no longer known to Redis: filed by the answer
    (StatusReport("failed", "30003"), None, "settled", False),
    (StatusReport("sent", ""), None, "waiting", True),
    (StatusReport("delivered", ""), ("d-1", False, ""), "settled", False),
], ids=["moved-to-ending", "moved-to-sent", "callback-ended-it", "callback-ended-it-first",
        "not-final", "unknown-final", "unknown-not-final", "no-record"])
def test_an_answer_is_filed_by_what_applying_it_did(
        answer: StatusReport, applied: tuple[str, bool, str] | None, filed: str,
        ask_again: bool) -> None:
    """Moved, settled (at an ending now) or waiting (asked again), and counted once."""
    swept = Swept()
    assert swept.file("d-1", answer, applied) is ask_again
    lists = {"moved": swept.moved, "settled": swept.settled, "waiting": swept.waiting}
    assert {name: ids for name, ids in lists.items() if ids} == {filed: ["d-1"]}
    assert swept.taken == 1


def test_an_error_is_unanswered_and_none_is_left_to_the_caller() -> None:
    """The provider's error: unanswered, its text kept (the first one); None (unknown to
    the provider) is the caller's to give up: not filed here."""
    swept = Swept()
    assert swept.file("d-1", RuntimeError("503 from Twilio"), None) is False
    assert swept.file("d-2", RuntimeError("timeout"), None) is False
    assert swept.file("d-3", None, None) is False
    assert (swept.unanswered, swept.error, swept.taken) == (["d-1", "d-2"],
                                                            "503 from Twilio", 2)
