"""File a report: keep it in the Redis outbox (on disk: the record), then put it on the
broker.

The outbox entry stays until the intake has taken the report in; the worker sends it
again from there if that does not happen in time (a broker that did not take it, or the
embedded broker, which keeps nothing across its own restart). So a report is accepted
once it is recorded: the API answers 202 then, and its trip to the broker goes on behind
(:class:`Handoffs`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from coordinator import observability as obs
from coordinator import topics
from coordinator.broker import Producer
from coordinator.city import City
from coordinator.errors import BrokerUnavailable, LoaError
from coordinator.events import Report
from coordinator.keys import Keys
from coordinator.state import Redis, Script

log = obs.get_logger("filing")
MAX_UNDER_WAY = 1000
"""Reports on their way to the broker at once, past which the outbox's resend takes them."""
RECONNECT_EVERY_S = 5.0
"""A producer that is not connected is tried again at most this often, as reports come."""
SAY_EVERY_S = 5.0
"""Reports left to the outbox are said in the log at most this often (with their count)."""


def report_problems(report: Report, city: City) -> list[tuple[str, str]]:
    """(field, message) for what the city's config says is wrong with a report."""
    problems = []
    if report.kind not in city.kinds:
        problems.append(("kind", f"unknown kind {report.kind!r}; the city takes: "
                                 f"{', '.join(sorted(city.kinds))} (config/kinds.yaml)"))
    if report.area not in city.areas:
        problems.append(("area", city.unknown_area(report.area)))
    kind = city.kinds.get(report.kind)
    if kind is not None and kind.claims and not report.claim:
        problems.append(("claim", f"a {report.kind} report says what the false claim is, in "
                                  "the words that are spreading"))
    if kind is not None and not kind.claims and (report.claim or report.spreading):
        problems.append(("claim", f"only reports of false information carry a claim; kind "
                                  f"{report.kind!r} does not (kinds that do: " + ", ".join(
                                      sorted(k for k, v in city.kinds.items() if v.claims))
                                  + ")"))
    if report.drill_list and not report.exercise:
        problems.append(("drill_list", "only an exercise goes to a test list: set exercise "
                                       "too, or leave drill_list out"))
    return problems


class ReportIdTaken(LoaError):
    """A report id its filer already used for a different report: the first one stands,
    and this one would be dropped as its replay."""


# KEYS: fingerprints, outbox, outbox times; ARGV: report id, fingerprint, report, now.
# 0 when the id holds another report's fingerprint (nothing written), else 1.
_RECORD = Script("""
local had = redis.call('HGET', KEYS[1], ARGV[1])
if had and had ~= ARGV[2] then return 0 end
if not had then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
""")


def fingerprint(report: Report) -> str:
    """What makes a resend the same report: everything its filer said and who they are,
    not when or by which interface it came (nor a field a later release adds with its
    default). Pure."""
    said = report.model_dump_json(exclude={"received_at", "received_via"},
                                  exclude_defaults=True)
    return hashlib.sha256(said.encode()).hexdigest()[:32]


async def record_report(redis: Redis, keys: Keys, report: Report) -> None:
    """Keep a report in the outbox (once per id): from here on it is not lost. The same id
    again is a resend, taken in once; with a different report it is ReportIdTaken."""
    done = await _RECORD(redis, [keys.report_fingerprints(), keys.outbox(),
                                 keys.outbox_times()],
                         [report.id, fingerprint(report), report.model_dump_json(),
                          time.time()])
    if not done:
        raise ReportIdTaken(f"{report.id} was already used for a different report; give "
                            "this one its own id (a resend must be the same report)")


async def forget_refused(redis: Redis, keys: Keys, report_id: str) -> None:
    """A report the worker refused for good (an area or kind this city no longer has, once
    its dead letter keeps it with the reason): no longer kept, or it would be sent again
    and refused again every resend round, for good."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.outbox(), report_id)
        pipe.zrem(keys.outbox_times(), report_id)
        await pipe.execute()


async def file_report(redis: Redis, keys: Keys, producer: Producer, report: Report) -> None:
    """Durably record a report, then wait for the broker to take it; raises
    BrokerUnavailable (the outbox still holds it)."""
    await record_report(redis, keys, report)
    await producer.send(topics.REPORTS, report.correlation_key(), report.to_bytes())


class Handoffs:
    """Recorded reports on their way to the broker while their filer has had the answer:
    a client need not wait for the broker's acknowledgement of what is already kept. One
    the broker does not take, or one past :data:`MAX_UNDER_WAY` at once, is left to the
    worker's resend from the outbox. A producer that could not connect (the broker was down
    as the web started) is connected again here, at most every :data:`RECONNECT_EVERY_S`."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.under_way: set[asyncio.Task[None]] = set()
        self.left_to_outbox = 0  # since it was last said in the log
        self._said_at = 0.0
        self._connect_at = 0.0

    def start(self, report: Report) -> None:
        """Send a recorded report to the broker, behind."""
        if len(self.under_way) >= MAX_UNDER_WAY:  # the broker is slow: the outbox has it
            self._left(report, "too many on their way to the broker")
            return
        task = asyncio.create_task(self._send(report))
        self.under_way.add(task)
        task.add_done_callback(self.under_way.discard)

    async def finish(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the sends under way (what is cut off stays kept)."""
        if self.under_way:
            await asyncio.wait(set(self.under_way), timeout=timeout_s)

    async def _send(self, report: Report) -> None:
        try:
            if not self.producer.started:
                if time.monotonic() < self._connect_at:
                    raise BrokerUnavailable("not connected to the broker")
                self._connect_at = time.monotonic() + RECONNECT_EVERY_S
                await self.producer.ensure_started()
            await self.producer.send(topics.REPORTS, report.correlation_key(),
                                     report.to_bytes())
        except BrokerUnavailable as exc:
            self._left(report, str(exc))
        except Exception as exc:  # kept all the same; say what went wrong
            log.error("report not handed to the broker; the worker sends it from the outbox",
                      report=report.id, error=repr(exc))

    def _left(self, report: Report, why: str) -> None:
        """Count a report left to the outbox's resend; say so at most every few seconds."""
        self.left_to_outbox += 1
        if time.monotonic() - self._said_at >= SAY_EVERY_S:
            log.warning("report kept; the worker sends it from the outbox", report=report.id,
                        error=why, reports=self.left_to_outbox)
            self._said_at, self.left_to_outbox = time.monotonic(), 0
