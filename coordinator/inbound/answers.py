"""Which request an approver's `YES 123456` answers, or why it answers none.

The sender's number names the person (config/); the code is checked against the requests
that person was given a code for, recomputing each code with the key (nothing is stored to
compare with), in constant time. A code for a request that was decided, superseded or
withdrawn is refused with the reason, not sent on to be decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.approvals.chain import code_matches
from coordinator.approvals.inbox import prompted_requests
from coordinator.keys import Keys
from coordinator.model.approval import ApprovalRecord
from coordinator.state import Redis

# Wrong codes a person may send within WRONG_CODE_WINDOW_S before SMS answers are refused
# (the web inbox still works): 6 digits are a million tries, and this keeps them that way.
WRONG_CODES_ALLOWED = 5
WRONG_CODE_WINDOW_S = 3600


@dataclass(frozen=True)
class Match:
    """The request an answer may decide (`approval_id`), or why not (`refusal`, for the
    sender; `why`, for the audit trail)."""

    approval_id: str | None
    refusal: str = ""
    why: str = ""
    wrong_code: bool = False


def matching_requests(key: bytes, person_id: str, candidates: list[str], code: str
                      ) -> list[str]:
    """The candidates for which `code` is the person's code. Pure."""
    return [a for a in candidates if code_matches(key, a, person_id, code)]


def not_valid(code: str) -> str:
    """What the sender of a code that answers nothing is told (the same for a stranger)."""
    return f"Mã {code} không hợp lệ với số này. / Code {code} is not valid for this number."


def sms_refusal(record: ApprovalRecord, person_id: str) -> str | None:
    """Why an answer by `person_id` may not decide this request, in plain words; None when
    it may (the decider still has the last word). Pure."""
    rid = record.request.id
    if record.status == "superseded":
        return (f"{rid} đã được thay bằng bản mới; mã này không còn hiệu lực, hãy chờ tin nhắn "
                f"mới. / {rid} was replaced by a newer version: this code no longer works; "
                "a new message with the new text follows.")
    if record.status == "withdrawn":
        return f"{rid} đã được rút lại. / {rid} was withdrawn."
    if record.status != "pending":
        return (f"{rid} đã được quyết định ({record.status}, {record.decided_by}). / {rid} was "
                f"already {record.status} by {record.decided_by or '?'}.")
    if person_id not in record.eligible:
        return (f"Anh/chị không còn quyết định {rid}. / You may no longer decide {rid}.")
    return None


async def match_answer(redis: Redis, keys: Keys, key: bytes, person_id: str, code: str
                       ) -> Match:
    """The request `code` answers for `person_id`, or why none (see :class:`Match`)."""
    misses_key = keys.rate_window("sms-code", person_id)
    if int(await redis.get(misses_key) or 0) >= WRONG_CODES_ALLOWED:
        return Match(None, "Quá nhiều mã sai; hãy trả lời trên hộp thư web. / Too many wrong "
                     "codes: please answer in the web inbox.", "too many wrong codes")
    candidates = await prompted_requests(redis, keys, person_id)
    found = matching_requests(key, person_id, candidates, code)
    if not found:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(misses_key)
            pipe.expire(misses_key, WRONG_CODE_WINDOW_S, nx=True)
            await pipe.execute()
        return Match(None, not_valid(code), "no request of theirs has this code", True)
    if len(found) > 1:  # two keyed codes that collide: never guess
        return Match(None, "Mã này khớp nhiều yêu cầu; hãy trả lời trên hộp thư web. / This "
                     "code matches several requests: please answer in the web inbox.",
                     f"the code matches {', '.join(found)}")
    row = await redis.hgetall(keys.approval(found[0]))
    if not row:
        return Match(None, not_valid(code), f"{found[0]} is gone")
    record = ApprovalRecord.from_hash(row)
    refusal = sms_refusal(record, person_id)
    if refusal is not None:
        return Match(None, refusal, f"{found[0]} is {record.status}")
    return Match(found[0])
