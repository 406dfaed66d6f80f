"""Benchmark: statement fan-out to N subscribers (SMS + email) on the embedded stack.

    .venv/bin/python bench/fanout.py --subscribers 10000
    .venv/bin/python bench/fanout.py --subscribers 100000
    .venv/bin/python bench/fanout.py --subscribers 10000 --sms-rate 300
    .venv/bin/python bench/fanout.py --subscribers 100000 --sms-rate 300 --email-rate 300
    .venv/bin/python bench/fanout.py --subscribers 1000000 --resolve-only
    .venv/bin/python bench/fanout.py --subscribers 100000 --sms-rate 300 --prompts-during 20
    .venv/bin/python bench/fanout.py --subscribers 100000 --no-bare --escalations 1000

Prints JSON: audience resolution time; with a full run also, per channel, the time from
the approver's decision (its own timestamp, taken by `loa approve` once started) to the
first and to the last message the local SMS sandbox and SMTP server received, and the
rate; the rate the same endpoints take from bare clients (the real twilio SDK and
aiosmtplib, no Loa) driving both at once, with as many messages as Loa sends (at least
10,000 each), each as Loa sends it (the draft's SMS body; the email's subject, body with
its link, and leaving link), status callbacks configured as in Loa's run; the ratio of
the two (against the mean of a bare run before Loa's and one after it, once Loa's own SMS
have settled: this machine's speed moves by a fifth within minutes, and while the
approval awaits its approver the worker and Tansu keep the short fetch wait, about a
sixth of a core more than after it; `--no-bare-after`, `--prompts-during` and
`--escalations` keep only the one before; the one before follows an unmeasured run of
WARM_UP messages each way, so that the SDKs' first use is not in it); Loa's own CPU time
per delivery (worker, web, Redis and broker processes, from /proc), so its cost is known
apart from the endpoints that share the cores; and the first bare run's CPU time per
message while it sends (the same channel code and SDKs as Loa's worker, the messages
built before: the floor under the worker's share; scheduled by the OS as usual, while the
worker is scheduled as batch work: see `LOA_WORKER_CPU_POLICY`). Every subscriber is on
both channels, so the audience is the number of SMS and of emails; `--share 1` puts them
all in the statement's area (at 10,000 subscribers: 10,000 messages each way, as many as
the bare clients send).

With `--prompts-during N`, N flood reports elsewhere in the city are filed through the API,
one a second, while the fan-out runs; each opens its own incident, whose approval prompt
goes by SMS to an approver. It prints how long each took from the report to its prompt
handed to the SMS endpoint (from the incidents' timelines): prompts have their own lane,
so a fan-out held to the provider's rate must not delay them.

With `--escalations N`, N pending approval requests are stored as the planner stores them
(bench/escalation.py), their first deadlines spread over `--escalation-spread` seconds from
20 s after the approval, so they come due while the fan-out runs; it prints their lateness
(deadline -> the escalation's recorded time, taken as its transition starts), missed and
duplicated. The escalations' own prompts then count in the endpoints' totals, so the rates
of such a run are not comparable. `loa scheduler` runs as under `loa up` (its CPU counts in
Loa's) unless `--no-scheduler`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from _measure import (  # bench/ is the script's folder
    SyncRedis,
    cpu_s,
    peak_rss_mib,
    reference_work_ms,
    stop_all,
    sync_redis,
    wait_for_beats,
)
from _report_times import first_prompts, planned, quantiles
from escalation import lateness_of, schedule_all
from pydantic import SecretStr

from channels.base import OutboundMessage
from coordinator.app import BATCH_CONCURRENCY
from coordinator.broker import ensure_topics
from coordinator.city import load_city
from coordinator.dispatch.audience import resolve_audience
from coordinator.dispatch.batches import CONCURRENCY
from coordinator.dispatch.channels import email_channel, sms_channel
from coordinator.dispatch.fanout import deliveries_for, next_chunk
from coordinator.dispatch.reach import ReachInputs, reach_of
from coordinator.embedded import Service, free_port, start_redis, start_tansu, wait_for_port
from coordinator.events import ApprovalRequest, Draft
from coordinator.keys import Keys
from coordinator.migrations import CURRENT
from coordinator.settings import Settings
from coordinator.state import connect
from coordinator.statements.approved import statement_for
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.store import (
    RECORD_BUCKET,
    canonical_id,
    contact_key,
    encode,
    load,
    record_key,
)
from coordinator.subscribers.unsubscribe import unsubscribe_token

LINK_SECRET = "bench"
WARM_UP = 1_000  # messages each way the bare clients send, unmeasured, before their run
STATEMENT_AREA = "hn-phuong-giang-vo"  # a ward of the map in force (hanoi-2025)
AREAS_OF_INTEREST = "hn-ba-dinh"  # a grouping holding it: the targeted subscribers follow it


def seed(r: SyncRedis, keys: Keys, n: int, share_targeted: float = 0.1,
         areas_wanted: int = 0) -> tuple[int, int]:
    """N subscribers straight into Redis, in the registry's layout (subscribers.store), ~share
    of them targeted; the others spread over the map's other areas, and over made-up ones
    up to `areas_wanted` areas in all. Records and contacts go in bucket by bucket, each
    index bitmap is built here and written whole: ten million take a few minutes, not an
    hour of SETBITs. Returns (targeted, areas used)."""
    city = load_city(Settings().config_dir, Settings().area_map)
    near = set(city.overlapping(STATEMENT_AREA)) | {AREAS_OF_INTEREST}
    others = [a for a in city.areas if a not in near]  # no one there hears of it
    others += [f"bench-area-{i:04d}" for i in range(max(0, areas_wanted - len(others) - 1))]
    consent = datetime(2026, 11, 22, tzinfo=UTC)
    sample = Subscriber.model_construct(
        id=canonical_id(1), phone="+84970000000", email="s0@dan.example", language="vi",
        areas=[AREAS_OF_INTEREST], topics=["*"], channels=["sms", "email"], role="resident",
        drills=False, lists=[], status="active", consent_at=consent, consent_source="bench")
    template = (f'[0,"+8497{{i:07d}}","s{{i}}@dan.example","vi",["{{area}}"],"sms,email",'
                f'"a",{round(consent.timestamp() * 1000)},"bench"]')
    assert template.format(i=0, area=AREAS_OF_INTEREST) == encode(sample, 1)  # same layout
    size = (n + 1) // 8 + 1
    bits: dict[str, bytearray] = {}

    def bitmap(key: str) -> bytearray:
        return bits.setdefault(key, bytearray(size))

    common = [bitmap(k) for k in (keys.subs_bits("topic", "*"), keys.subs_bits("channel", "sms"),
                                  keys.subs_bits("channel", "email"),
                                  keys.subs_bits("lang", "vi"), keys.subs_active())]
    targeted = 0
    records: dict[str, str] = {}
    contacts: dict[str, dict[str, int]] = {}
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        number = i + 1
        hit = i % round(1 / share_targeted) == 0
        area = AREAS_OF_INTEREST if hit else others[i % len(others)]
        targeted += hit
        byte, mask = number >> 3, 0x80 >> (number & 7)
        for b in (*common, bitmap(keys.subs_bits("area", area))):
            b[byte] |= mask
        records[str(number)] = template.format(i=i, area=area)
        phone, email = f"+8497{i:07d}", f"s{i}@dan.example"
        contacts.setdefault(contact_key(keys, phone), {})[phone] = number
        contacts.setdefault(contact_key(keys, email), {})[email] = number
        if number % RECORD_BUCKET == RECORD_BUCKET - 1 or number == n:
            pipe.hset(record_key(keys, number), mapping=records)
            records = {}
        if number % 200_000 == 0 or number == n:
            for key, mapping in contacts.items():
                pipe.hset(key, mapping=mapping)
            contacts = {}
            pipe.execute()
    for key, data in bits.items():
        pipe.set(key, bytes(data))
    pipe.set(keys.subs_next(), n)
    pipe.set(keys.layout_version(), CURRENT, nx=True)  # written as this Loa writes it
    pipe.execute()
    return targeted, len({*others, AREAS_OF_INTEREST})


async def resolve(settings: Settings) -> dict[str, float]:
    """Resolve the statement's audience as a fan-out does, count it per channel as the
    approval request does, and cut its first chunk (its numbers read and split by channel,
    the batch's event not sent: there is no broker here); milliseconds of each."""
    rds = connect(settings.redis_url or "")
    keys, key = Keys("bench"), "bench:resolve:audience"
    city = load_city(settings.config_dir, settings.area_map)
    try:
        started = time.perf_counter()
        size = await resolve_audience(rds, keys, city, STATEMENT_AREA, "flood", key)
        resolved = time.perf_counter()
        numbers, _ = await next_chunk(rds, key, 0, settings.dispatch_batch_size)
        async with rds.pipeline(transaction=False) as pipe:
            for channel in ("sms", "email"):
                pipe.execute_command("BITFIELD_RO", keys.subs_bits("channel", channel), *[
                    a for n in numbers for a in ("GET", "u1", n)])
            await pipe.execute()
        first = await load(rds, keys, numbers)
        cut = time.perf_counter()
        reach = await reach_of(rds, keys, city, ReachInputs("", STATEMENT_AREA, "flood", []))
        counted = time.perf_counter()
        await rds.delete(key)
        return {"audience": size, "audience_resolution_ms": round((resolved - started) * 1000, 1),
                "first_chunk_ms": round((cut - resolved) * 1000, 1),
                "first_chunk_size": len(first),
                "reach_count_ms": round((counted - cut) * 1000, 1),
                "reach_sms": reach.sms, "reach_email": reach.email}
    finally:
        await rds.aclose()


def loa_shaped(settings: Settings, r: SyncRedis, approval: str
               ) -> Callable[[str, int], OutboundMessage]:
    """The messages Loa's fan-out will send for `approval` (its draft, rendered, to a
    subscriber like the seeded ones), for the bare clients: the same SMS body, and the same
    email subject, body with its link, and one-click leaving link, to the i-th address."""
    request = ApprovalRequest.model_validate_json(r.hget(f"bench:approval:{approval}",
                                                         "request"))
    draft = Draft.model_validate_json(r.get(f"bench:draft:{request.draft_id}"))
    incident = r.hgetall(f"bench:incident:{request.incident_id}")
    statement = statement_for(request, draft, incident, ["bench"], "approver", datetime.now(UTC))
    languages = load_city(settings.config_dir, settings.area_map).languages
    link = f"{settings.web_url()}/statements/{statement.id}"

    def message(channel: str, i: int) -> OutboundMessage:
        sub = Subscriber.model_construct(
            id=canonical_id(i + 1), phone=f"+8496{i:07d}", email=f"raw{i}@dan.example",
            language="vi", channels=[channel])
        # as dispatch.fanout.unsubscribe_url makes it, with the run's LOA_LINK_SECRET
        leave = f"{settings.web_url()}/unsubscribe/{unsubscribe_token(LINK_SECRET, sub.id)}?lang=vi"
        [d] = deliveries_for(statement, sub, link, languages,
                             leave if channel == "email" else None, only=channel)
        return OutboundMessage(id=f"raw-{channel}-{i}", recipient=d.recipient, text=d.text,
                               subject=d.subject, html=d.html, language=d.language,
                               unsubscribe_url=d.unsubscribe_url)
    return message


async def raw_capacity(settings: Settings, count: int, in_flight: int,
                       message: Callable[[str, int], OutboundMessage]
                       ) -> tuple[dict[str, float], float]:
    """Messages per second the endpoints take from the real clients, without Loa: both
    channels at once, `count` messages each (`message(channel, i)`: as Loa sends them),
    `in_flight` at a time per channel (as many as Loa's worker has), SMS with the same
    status callback URL as Loa's, and the same rate limits as Loa's run (`--sms-rate`,
    `--email-rate`). Also the CPU time the sends took in this process (the messages are
    built before)."""
    rds = connect(settings.redis_url or "")
    sms = sms_channel(settings, rds, Keys("rawcap"))
    email = email_channel(settings, rds, Keys("rawcap"))
    out: dict[str, float] = {}

    # Built before the clock starts: making a message (the subscriber, the delivery, the
    # leaving link) is Loa's work, not the clients'.
    made = {name: [message(name, i) for i in range(count)] for name in ("sms", "email")}

    async def drive(name: str, channel: Any) -> None:
        sem = asyncio.Semaphore(in_flight)

        async def one(m: OutboundMessage) -> None:
            async with sem:
                await channel.send(m)

        started = time.perf_counter()
        await asyncio.gather(*(one(m) for m in made[name]))
        out[name] = round(count / (time.perf_counter() - started), 1)

    try:
        cpu = time.process_time()
        await asyncio.gather(drive("sms", sms), drive("email", email))
        cpu = time.process_time() - cpu
    finally:
        await sms.close()
        await email.close()
        await rds.aclose()
    return out, cpu



def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "coordinator.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def file_during(web_port: int, token: str, count: int, out: list[str]) -> None:
    """File `count` flood reports, one a second, each in another ward outside the fan-out's
    grouping (so each opens its own incident); their ids go to `out`."""
    city = load_city(Settings().config_dir, Settings().area_map)
    near = set(city.overlapping(AREAS_OF_INTEREST))
    wards = [code for code, area in city.areas.items()
             if area.depth == 3 and code not in near][:count]
    for ward in wards:
        answer = httpx.post(f"http://127.0.0.1:{web_port}/api/reports", json={
            "kind": "flood", "severity": "severe", "area": ward, "title": f"Ngập ở {ward}"},
            headers={"Authorization": f"Bearer {token}"}, timeout=30)
        out.append(answer.json()["id"])
        time.sleep(1.0)


def prompts_during(r: SyncRedis, report_ids: list[str]) -> dict[str, Any]:
    """Report -> its first approval prompt handed to its channel, from the timelines."""
    keys = Keys("bench")
    deadline = time.time() + 120
    while True:
        found = planned(r, keys, report_ids)
        handed = first_prompts(r, keys, [row["incident"] for row in found.values()])
        if len(handed) >= len(report_ids) or time.time() > deadline:
            break
        time.sleep(0.5)
    waits = [handed[row["incident"]] - row["received_at"] for row in found.values()
             if row["incident"] in handed]
    return {"reports": len(report_ids), "prompts_handed_over": len(waits),
            "report_to_prompt_handed_over": quantiles(waits)}


def escalated(r: SyncRedis, deadlines: dict[str, datetime], fan_out_end: datetime
              ) -> dict[str, Any]:
    """Once the last deadline is 10 s past: how late the escalations were, and how many
    came due before the fan-out's last message."""
    while datetime.now(UTC) < max(deadlines.values()) + timedelta(seconds=10):
        time.sleep(0.5)
    return {"approvals": len(deadlines),
            "deadlines_before_the_fan_out_ended": sum(d < fan_out_end
                                                      for d in deadlines.values()),
            **lateness_of(r, "bench", deadlines)}


def full_run(root: Path, settings: Settings, env: dict[str, str], targeted: int,
             r: SyncRedis, procs: list[subprocess.Popen[bytes]],
             loa_pids: dict[str, int], bare: bool = True, prompts: int = 0,
             escalations: int = 0, escalation_spread_s: float = 60.0,
             scheduler: bool = True, bare_after: bool = True) -> dict[str, Any]:
    sms_url = env["LOA_TWILIO_BASE_URL"]
    web_port = int(env["LOA_WEB_PORT"])
    worker = spawn(["worker"], env, root / "worker.log")
    procs.append(worker)
    procs.append(spawn(["web"], env, root / "web.log"))
    wait_for_port(web_port, 60, procs[-1])
    loa_pids |= {"worker": worker.pid, "web": procs[-1].pid}
    if scheduler:  # as `loa up` runs it
        procs.append(spawn(["scheduler"], env, root / "scheduler.log"))
        loa_pids["scheduler"] = procs[-1].pid
    keys = Keys("bench")
    wait_for_beats(r, {keys.worker_heartbeat("worker-1"): worker}
                   | ({keys.scheduler_heartbeat(): procs[-1]} if scheduler else {}))
    reporter = make_token(env, "bench-reporter", "reporter", "--department=construction")
    answer = httpx.post(f"http://127.0.0.1:{web_port}/api/reports", json={
        "kind": "flood", "severity": "severe", "area": STATEMENT_AREA,
        "title": "Ngập sâu phố Kim Mã"}, headers={"Authorization": f"Bearer {reporter}"}).json()
    while not r.hget(f"bench:report:{answer['id']}", "incident"):
        time.sleep(0.05)
    incident = r.hget(f"bench:report:{answer['id']}", "incident")
    while not r.hget(f"bench:incident:{incident}", "approval_id"):
        time.sleep(0.05)
    approval = r.hget(f"bench:incident:{incident}", "approval_id")
    approver = json.loads(r.hget(f"bench:approval:{approval}", "holders"))[0]
    token = make_token(env, "bench-approver", "approver", f"--person={approver}")
    if bare:  # unmeasured: the SDKs' first use (lazy imports, connections) is not a rate
        asyncio.run(raw_capacity(settings, WARM_UP, BATCH_CONCURRENCY * CONCURRENCY,
                                 loa_shaped(settings, r, approval)))
        callbacks_settled(sms_url)
    raw, bare_cpu = (asyncio.run(raw_capacity(settings, max(10_000, targeted),
                                              BATCH_CONCURRENCY * CONCURRENCY,
                                              loa_shaped(settings, r, approval)))
                     if bare else ({"sms": float("nan"), "email": float("nan")}, 0.0))
    tail_s = callbacks_settled(sms_url)
    httpx.post(f"{sms_url}/_sandbox/reset")
    mail = root / "mail"
    before_mail = files_in(mail / "new")
    time.sleep(2)  # the approval prompt's own SMS is out of the way
    sms_before = httpx.get(f"{sms_url}/_sandbox/count", timeout=60).json()["messages"]
    cpu_before = {name: cpu_s(pid) for name, pid in loa_pids.items()}
    calls_before = redis_calls(r)
    deadlines = asyncio.run(schedule_all(settings, escalations, escalation_spread_s,
                                         lead_s=20.0)) if escalations else {}
    approved_at = datetime.now(UTC)
    # Watched from before the approval: the CLI may exit well after the first messages.
    seen: list[tuple[dict[str, float], dict[str, float]]] = []
    watcher = threading.Thread(target=lambda: seen.append(
        watch(sms_url, mail, sms_before, before_mail, targeted)))
    watcher.start()
    cli_started = time.time()
    subprocess.run([sys.executable, "-m", "coordinator.cli", "approve", approval, "--token",
                    token], env=env, check=True, capture_output=True)
    # The clock starts when the approver decided (the decision's own time, taken by `loa
    # approve` once it has started), not when the CLI process was launched: its Python
    # start-up is not the fan-out's.
    started = decided_at(r, approval)
    filed: list[str] = []
    filer = threading.Thread(target=file_during, args=(web_port, reporter, prompts, filed))
    filer.start()
    watcher.join()
    first, finished = ({c: t - started for c, t in times.items()} for times in seen[0])
    cpu = {name: round(cpu_s(pid) - cpu_before[name], 2) for name, pid in loa_pids.items()}
    calls = redis_calls(r) - calls_before
    rates = {c: round(targeted / finished[c], 1) for c in finished}
    limits = {c: rate for c, rate in (("sms", settings.sms_rate_per_s),
                                      ("email", settings.email_rate_per_s)) if 0 < rate < 100000}
    filer.join()
    during = {"prompts_during_fan_out": prompts_during(r, filed)} if prompts else {}
    if deadlines:
        during["escalations_during_fan_out"] = escalated(
            r, deadlines, approved_at + timedelta(seconds=max(finished.values())))
    # The bare clients again, once Loa's own SMS have settled: this machine's speed moves
    # by a fifth within minutes, so Loa's rate is set against both runs that bracket it.
    # Not with prompts or escalations, which may still be under way (and would share the
    # cores with it), and whose messages make the rates incomparable anyway.
    after = None
    if bare and bare_after and not (prompts or deadlines):
        callbacks_settled(sms_url)
        after = asyncio.run(raw_capacity(settings, max(10_000, targeted),
                                         BATCH_CONCURRENCY * CONCURRENCY,
                                         loa_shaped(settings, r, approval)))[0]
    bracket = {c: (raw[c] + after[c]) / 2 for c in raw} if after else raw
    return during | {"bare_callbacks_tail_s": tail_s,
            "approve_cli_to_decision_s": round(started - cli_started, 2),
                     "approval_to_first_message_s": {c: round(t, 3) for c, t in first.items()},
                     "approval_to_last_message_s": {c: round(t, 2) for c, t in finished.items()},
            "messages": 2 * targeted,
            "loa_messages_per_second": rates,
            "bare_clients_messages_per_second": raw,
            **({"bare_clients_after_messages_per_second": after,
                "ratio_to_bare_clients_before": {c: round(rates[c] / raw[c], 3) for c in raw},
                "ratio_to_bare_clients_after": {c: round(rates[c] / after[c], 3)
                                                for c in after}} if after else {}),
            # against the mean of the bare runs before and after Loa's (the one before alone
            # with --no-bare-after)
            "ratio_to_bare_clients": {c: round(rates[c] / bracket[c], 3) for c in bracket},
            **({"share_of_rate_limit": {c: round(rates[c] / limit, 3)
                                        for c, limit in limits.items() if c in rates}}
               if limits else {}),
            "loa_cpu_s": cpu,
            "loa_cpu_us_per_delivery": round(sum(cpu.values()) / (2 * targeted) * 1e6, 1),
            # Every client's commands (the bench's own looks included) during Loa's run: a
            # transaction (MULTI … EXEC) counts its commands one by one, and EXEC once more.
            "redis_commands_per_delivery": round(sum(calls.values()) / (2 * targeted), 2),
            "redis_commands_most": dict(calls.most_common(8)),
            "redis_transactions": calls["exec"],
            # The bare run's own CPU while it sends: the channels with their rate limiter,
            # the twilio SDK and aiosmtplib (its messages were built before); Loa's worker
            # hands over through the same code, so this is the floor under its share.
            "bare_clients_cpu_us_per_message": round(
                bare_cpu / (2 * max(10_000, targeted)) * 1e6, 1) if bare else None,
            "worker_peak_rss_mib": round(peak_rss_mib(worker.pid), 1)}


def watch(sms_url: str, mail: Path, sms_before: int, before_mail: int, targeted: int
          ) -> tuple[dict[str, float], dict[str, float]]:
    """Per channel, when (epoch s) its first and its last message reached the endpoints."""
    started = time.time()
    finished: dict[str, float] = {}
    first: dict[str, float] = {}
    while len(finished) < 2:
        # the count, not the outbox: serialising 20,000 messages a second would load the
        # sandbox the benchmark measures
        counts = {"sms": httpx.get(f"{sms_url}/_sandbox/count",
                                   timeout=60).json()["messages"] - sms_before,
                  "email": files_in(mail / "new") - before_mail}
        for channel, count in counts.items():
            if count > 0 and channel not in first:
                first[channel] = time.time()
            if count >= targeted and channel not in finished:
                finished[channel] = time.time()
        if time.time() - started > 3600:
            raise SystemExit("gave up after an hour")
        # Coarse while far from the end (each look costs the endpoints and this process
        # some CPU), fine near it: a look 0.5 s late would take 8 % off a 6 s run's rate.
        near = any(c not in finished and n >= 0.95 * targeted for c, n in counts.items())
        time.sleep(0.02 if near or len(first) < 2 else 0.5)  # fine until the first ones too
    return first, finished


def redis_calls(r: SyncRedis) -> Counter[str]:
    """How many times Redis has run each command so far (INFO commandstats)."""
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"])
                    for name, stats in r.info("commandstats").items()})


def files_in(folder: Path) -> int:
    """How many entries a folder has (0 when it is not there): os.scandir, not a glob,
    since it is asked every 20 ms near the end of a run of tens of thousands of emails."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for _ in entries)
    except FileNotFoundError:
        return 0


def decided_at(r: SyncRedis, approval: str) -> float:
    """When the approver decided (epoch seconds), as the approval record says."""
    decided = r.hget(f"bench:approval:{approval}", "decided_at")
    if not decided:
        raise SystemExit(f"{approval} is not approved after `loa approve`: "
                         f"{r.hget(f'bench:approval:{approval}', 'status')}")
    return datetime.fromisoformat(decided).timestamp()


def callbacks_settled(sms_url: str) -> float:
    """Wait until the SMS sandbox has no message still moving through its statuses, and
    say how long that took. After the bare clients, their SMS still move on, each status
    callback landing on Loa's web: Loa's run would share the cores with that tail, and its
    CPU count would include the web's share of it."""
    started = time.perf_counter()
    while httpx.get(f"{sms_url}/_sandbox/count", timeout=60).json()["moving"]:
        time.sleep(0.2)
    return round(time.perf_counter() - started, 1)


def make_token(env: dict[str, str], name: str, role: str, *scope: str) -> str:
    """An API token made with `loa tokens add` (its last line of output)."""
    done = subprocess.run([sys.executable, "-m", "coordinator.cli", "tokens", "add", name,
                           "--role", role, *scope], env=env, check=True, capture_output=True,
                          text=True)
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--resolve-only", action="store_true")
    parser.add_argument("--areas", type=int, default=0,
                        help="spread the subscribers over this many areas (made-up ones "
                             "beyond the map's)")
    parser.add_argument("--no-bare-after", action="store_true",
                        help="run the bare clients only before Loa's fan-out, not after too")
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare clients' run (when profiling Loa alone)")
    parser.add_argument("--share", type=float, default=0.1,
                        help="the share of subscribers in the statement's area (1 = all)")
    parser.add_argument("--sms-rate", type=float, default=100000.0,
                        help="Loa's SMS rate limit (a provider's rate, e.g. 300)")
    parser.add_argument("--email-rate", type=float, default=0.0,
                        help="Loa's email rate limit (a relay's rate, e.g. 300; 0: none)")
    parser.add_argument("--prompts-during", type=int, default=0,
                        help="reports filed during the fan-out, one a second, each with "
                             "its own approval prompt (their latency is printed)")
    parser.add_argument("--escalations", type=int, default=0,
                        help="pending approvals whose deadlines come due during the fan-out "
                             "(their lateness is printed)")
    parser.add_argument("--escalation-spread", type=float, default=60.0)
    parser.add_argument("--no-scheduler", action="store_true",
                        help="no `loa scheduler` (the worker alone fires the timers)")
    args = parser.parse_args()
    reference = reference_work_ms()  # before anything else runs
    root = Path(tempfile.mkdtemp(prefix="loa-bench-fanout-"))
    rservice: Service = start_redis(root / "redis", appendonly=False)
    r = sync_redis(rservice.url)
    procs: list[subprocess.Popen[bytes]] = []
    broker: Service | None = None
    try:
        before = int(r.info("memory")["used_memory"])
        seed_started = time.perf_counter()
        _, areas_used = seed(r, Keys("bench"), args.subscribers, args.share, args.areas)
        seeded_s = time.perf_counter() - seed_started
        held = int(r.info("memory")["used_memory"]) - before
        settings = Settings(redis_url=rservice.url, redis_prefix="bench")
        resolved = asyncio.run(resolve(settings))
        size = int(resolved["audience"])
        result: dict[str, Any] = {
            "benchmark": "fanout", "reference_work_ms": [reference],
            "subscribers": args.subscribers, "areas": areas_used,
            "seed_s": round(seeded_s, 1), "redis_bytes_per_subscriber": round(
                held / max(1, args.subscribers), 1), **resolved}
        if not args.resolve_only:
            broker = start_tansu(log_path=root / "broker.log")
            sms_port, smtp_port, web_port = free_port(), free_port(), free_port()
            env = {**os.environ, "LOA_KAFKA_URL": broker.url,
                   "LOA_REDIS_URL": rservice.nearest_url,  # as `loa up` gives its processes
                   "LOA_REDIS_PREFIX": "bench", "LOA_LOG_LEVEL": "warning",
                   "LOA_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "LOA_TWILIO_AUTH_TOKEN": "t",
                   "LOA_TWILIO_FROM_NUMBER": "+15005550006",
                   "LOA_TWILIO_BASE_URL": f"http://127.0.0.1:{sms_port}",
                   "LOA_SMTP_HOST": "127.0.0.1", "LOA_SMTP_PORT": str(smtp_port),
                   "LOA_WEB_PORT": str(web_port), "LOA_SMS_RATE_PER_S": str(args.sms_rate),
                   "LOA_EMAIL_RATE_PER_S": str(args.email_rate),
                   "LOA_LINK_SECRET": LINK_SECRET, "LOA_SECRET_KEY": "bench-secret-key",
                   # one approval whatever the audience costs (what is measured is the
                   # fan-out, not the second approval a large one needs)
                   "LOA_SECOND_APPROVAL_ABOVE_SEGMENTS": "0"}
            procs.append(spawn(["sandbox", "sms", "--port", str(sms_port)], env,
                               root / "sms.log"))
            procs.append(spawn(["sandbox", "smtp", "--port", str(smtp_port), "--maildir",
                                str(root / "mail")], env, root / "smtp.log"))
            wait_for_port(sms_port, 30)
            wait_for_port(smtp_port, 30)
            settings = Settings(
                redis_url=rservice.url, redis_prefix="bench", kafka_url=broker.url,
                twilio_account_sid=env["LOA_TWILIO_ACCOUNT_SID"],
                twilio_auth_token=SecretStr("t"), twilio_from_number="+15005550006",
                twilio_base_url=env["LOA_TWILIO_BASE_URL"], smtp_host="127.0.0.1",
                smtp_port=smtp_port, web_port=web_port, sms_rate_per_s=args.sms_rate,
                email_rate_per_s=args.email_rate)
            asyncio.run(ensure_topics(settings))
            # full_run appends the worker and web to `procs`, so they are stopped even if it fails
            loa_pids = {"redis": rservice.proc.pid, "broker": broker.proc.pid}
            result |= full_run(root, settings, env, size, r, procs, loa_pids,
                               bare=not args.no_bare, prompts=args.prompts_during,
                               escalations=args.escalations,
                               escalation_spread_s=args.escalation_spread,
                               scheduler=not args.no_scheduler,
                               bare_after=not args.no_bare_after)
        result["redis_peak_mib"] = round(int(r.info("memory")["used_memory_peak"]) / 2**20, 1)
        result["reference_work_ms"].append(reference_work_ms())  # before, after
        print(json.dumps(result, indent=2))
    finally:
        stop_all(procs)
        r.close()
        if broker is not None:
            broker.stop()
        rservice.stop()


if __name__ == "__main__":
    main()
