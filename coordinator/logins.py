"""Failed logins against an account, from anywhere, and the wait they impose; and the
login trail in the audit stream. The HTTP side (who is asking, cookies, 429 answers) is in
coordinator.web.login_guard and coordinator.web.login.

After FREE_FAILURES failures within FAILURES_KEPT_S seconds, each further failure makes
the account wait FIRST_WAIT_S, then twice as long each time, at most MAX_WAIT_S.
"""

from __future__ import annotations

from coordinator.events import AuditEvent
from coordinator.keys import Keys
from coordinator.state import Pipeline, Redis, record_audit, transact

FREE_FAILURES = 10
FIRST_WAIT_S = 5
MAX_WAIT_S = 60
FAILURES_KEPT_S = 900


def account_wait_s(failures: int) -> int:
    """Seconds an account waits after its `failures`-th recent failed login: none for the
    first FREE_FAILURES, then doubling from FIRST_WAIT_S up to MAX_WAIT_S."""
    if failures <= FREE_FAILURES:
        return 0
    return int(min(FIRST_WAIT_S * 2 ** (failures - FREE_FAILURES - 1), MAX_WAIT_S))


async def account_waits_until(redis: Redis, keys: Keys, username: str) -> float:
    """The Unix time before which `username` may not try again (0 when it need not wait)."""
    return float(await redis.hget(keys.login_backoff(username), "until") or 0)


async def record_failed_login(redis: Redis, keys: Keys, username: str, now: float) -> int:
    """Count a failed login against the account from anywhere; returns the seconds it
    must now wait (0 while it has failures to spare)."""
    key = keys.login_backoff(username)

    async def body(pipe: Pipeline) -> int:
        failures = int(await pipe.hget(key, "failures") or 0) + 1
        wait = account_wait_s(failures)
        pipe.multi()
        pipe.hset(key, mapping={"failures": str(failures), "until": str(now + wait)})
        pipe.expire(key, FAILURES_KEPT_S)
        return wait

    return await transact(redis, [key], body)


async def record_login_event(redis: Redis, keys: Keys, event: AuditEvent) -> None:
    """Append one login event (a failure, a login, a logout, an enrolment) to the audit."""
    await record_audit(redis, keys, event)
