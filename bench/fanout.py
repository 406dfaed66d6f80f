"""Benchmark: statement fan-out to N subscribers (SMS + email) on the embedded stack.

    .venv/bin/python bench/fanout.py --subscribers 1000
    .venv/bin/python bench/fanout.py --subscribers 1000000 --resolve-only

Prints JSON: audience resolution time; with a full run also the time from the
approval to the last message received by the local SMS sandbox and SMTP
server, messages per second, the raw capacity of those two endpoints measured
in the same run (the real twilio SDK and aiosmtplib straight at them, no Loa),
and the peak RSS of the worker and of Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from _measure import peak_rss_mib  # bench/ is the script's folder
from pydantic import SecretStr

from channels.base import OutboundMessage
from coordinator.broker import ensure_topics
from coordinator.city import load_city
from coordinator.dispatch.audience import audience_key
from coordinator.dispatch.channels import email_channel, sms_channel
from coordinator.embedded import Service, free_port, start_redis, start_tansu, wait_for_port
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import connect
from coordinator.subscribers.models import new_subscriber_id

AREAS_OF_INTEREST = "hn-ba-dinh"  # the statement's area; other subscribers are elsewhere


def seed(r: redis.Redis, keys: Keys, n: int, share_targeted: float = 0.1) -> int:
    """N subscribers straight into Redis (the registry's layout); ~share of them targeted."""
    city = load_city(Settings().config_dir)
    others = [a for a in city.areas if not a.startswith(AREAS_OF_INTEREST)]
    targeted = 0
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        phone, email = f"+8497{i:07d}", f"s{i}@dan.example"
        sid = new_subscriber_id()
        hit = i % round(1 / share_targeted) == 0
        area = AREAS_OF_INTEREST if hit else others[i % len(others)]
        targeted += hit
        pipe.set(keys.subscriber(sid), json.dumps({
            "id": sid, "phone": phone, "email": email, "language": "vi", "areas": [area],
            "topics": ["*"], "channels": ["sms", "email"], "role": "resident",
            "status": "active", "consent_at": "2026-11-22T00:00:00Z", "consent_source": "bench"}))
        for index in (keys.subs_index("area", area), keys.subs_index("topic", "*"),
                      keys.subs_active(), keys.subs_all()):
            pipe.sadd(index, sid)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return targeted


async def resolve(settings: Settings) -> tuple[float, int]:
    rds = connect(settings.redis_url or "")
    try:
        started = time.perf_counter()
        key, size = await audience_key(rds, Keys("bench"), load_city(settings.config_dir),
                                       "hn-ba-dinh-kim-ma", "flood")
        elapsed = time.perf_counter() - started
        await rds.delete(key)
        return elapsed, size
    finally:
        await rds.aclose()


async def raw_capacity(settings: Settings, count: int) -> dict[str, float]:
    """Messages per second the endpoints take from the real clients, without Loa."""
    rds = connect(settings.redis_url or "")
    sms = sms_channel(settings.model_copy(update={"sms_rate_per_s": 100000.0}), rds,
                      Keys("rawcap"))
    email = email_channel(settings)
    out = {}
    try:
        for name, channel in (("sms", sms), ("email", email)):
            sem = asyncio.Semaphore(16)

            async def one(i: int, ch: Any = channel, nm: str = name,
                          sem: asyncio.Semaphore = sem) -> None:
                async with sem:
                    await ch.send(OutboundMessage(id=f"raw-{nm}-{i}", text="raw capacity",
                                                  recipient=f"+8496{i:07d}" if nm == "sms"
                                                  else f"raw{i}@dan.example", subject="raw"))

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(count)))
            out[name] = round(count / (time.perf_counter() - started), 1)
    finally:
        await sms.close()
        await email.close()
        await rds.aclose()
    return out



def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "coordinator.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def full_run(root: Path, settings: Settings, env: dict[str, str], targeted: int,
             r: redis.Redis, procs: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    sms_url = env["LOA_TWILIO_BASE_URL"]
    web_port = int(env["LOA_WEB_PORT"])
    worker = spawn(["worker"], env, root / "worker.log")
    procs.append(worker)
    procs.append(spawn(["web"], env, root / "web.log"))
    wait_for_port(web_port, 60, procs[-1])
    while not r.exists("bench:worker:worker-1"):
        time.sleep(0.1)
    raw = asyncio.run(raw_capacity(settings, 500))
    httpx.post(f"{sms_url}/_sandbox/reset")
    mail = root / "mail"
    before_mail = len(list((mail / "new").glob("*"))) if (mail / "new").exists() else 0
    reporter = make_token(env, "bench-reporter", "reporter", "--department=construction")
    answer = httpx.post(f"http://127.0.0.1:{web_port}/api/reports", json={
        "kind": "flood", "severity": "severe", "area": "hn-ba-dinh-kim-ma",
        "title": "Ngập sâu phố Kim Mã"}, headers={"Authorization": f"Bearer {reporter}"}).json()
    while not r.hget(f"bench:report:{answer['id']}", "incident"):
        time.sleep(0.05)
    incident = r.hget(f"bench:report:{answer['id']}", "incident")
    while not r.hget(f"bench:incident:{incident}", "approval_id"):
        time.sleep(0.05)
    approval = r.hget(f"bench:incident:{incident}", "approval_id")
    approver = json.loads(r.hget(f"bench:approval:{approval}", "holders"))[0]
    token = make_token(env, "bench-approver", "approver", f"--person={approver}")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "coordinator.cli", "approve", approval, "--token",
                    token], env=env, check=True, capture_output=True)
    while True:
        # the count, not the outbox: serialising 20,000 messages a second would load the
        # sandbox the benchmark measures
        sms_count = httpx.get(f"{sms_url}/_sandbox/count", timeout=60).json()["messages"]
        mails = len(list((mail / "new").glob("*"))) - before_mail
        if sms_count >= targeted and mails >= targeted:
            break
        if time.perf_counter() - started > 3600:
            raise SystemExit("gave up after an hour")
        time.sleep(1.0)
    elapsed = time.perf_counter() - started
    return {"approval_to_last_message_s": round(elapsed, 2),
            "messages": 2 * targeted,
            "messages_per_second": round(2 * targeted / elapsed, 1),
            "raw_capacity_per_second": raw,
            "ratio_to_raw": {c: round((targeted / elapsed) / raw[c], 3) for c in raw},
            "worker_peak_rss_mib": round(peak_rss_mib(worker.pid), 1)}


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
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loa-bench-fanout-"))
    rservice: Service = start_redis(root / "redis", appendonly=False)
    r = redis.Redis.from_url(rservice.url, decode_responses=True)
    procs: list[subprocess.Popen[bytes]] = []
    broker: Service | None = None
    try:
        seed(r, Keys("bench"), args.subscribers)
        settings = Settings(redis_url=rservice.url, redis_prefix="bench")
        resolve_s, size = asyncio.run(resolve(settings))
        result: dict[str, Any] = {"benchmark": "fanout", "subscribers": args.subscribers,
                                  "audience": size, "audience_resolution_ms":
                                  round(resolve_s * 1000, 1)}
        if not args.resolve_only:
            broker = start_tansu(log_path=root / "broker.log")
            sms_port, smtp_port, web_port = free_port(), free_port(), free_port()
            env = {**os.environ, "LOA_KAFKA_URL": broker.url, "LOA_REDIS_URL": rservice.url,
                   "LOA_REDIS_PREFIX": "bench", "LOA_LOG_LEVEL": "warning",
                   "LOA_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "LOA_TWILIO_AUTH_TOKEN": "t",
                   "LOA_TWILIO_FROM_NUMBER": "+15005550006",
                   "LOA_TWILIO_BASE_URL": f"http://127.0.0.1:{sms_port}",
                   "LOA_SMTP_HOST": "127.0.0.1", "LOA_SMTP_PORT": str(smtp_port),
                   "LOA_WEB_PORT": str(web_port), "LOA_SMS_RATE_PER_S": "100000",
                   "LOA_LINK_SECRET": "bench", "LOA_SECRET_KEY": "bench-secret-key"}
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
                smtp_port=smtp_port)
            asyncio.run(ensure_topics(settings))
            # full_run appends the worker and web to `procs`, so they are stopped even if it fails
            result |= full_run(root, settings, env, size, r, procs)
        result["redis_peak_mib"] = round(int(r.info("memory")["used_memory_peak"]) / 2**20, 1)
        print(json.dumps(result, indent=2))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        r.close()
        if broker is not None:
            broker.stop()
        rservice.stop()


if __name__ == "__main__":
    main()
