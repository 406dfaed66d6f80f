"""Benchmark: Loa's SMS and email channels against the raw capacity of the same endpoints.

    .venv/bin/python bench/channel_throughput.py --messages 10000

(Not `bench/channels.py`: a script of that name would shadow the `channels` package for
every benchmark in this folder.)

Starts the local Twilio-compatible sandbox and the local SMTP server, then sends
N SMS through `SmsChannel` (the real twilio SDK, our rate limiter and retries)
and N emails through `EmailChannel` (one reused aiosmtplib connection), and the
same counts with minimal clients (httpx form POSTs; a bare aiosmtplib send).
Prints JSON: messages per second, ratio to raw, p99 hand-off latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
from pydantic import SecretStr

from channels.base import OutboundMessage
from channels.delivery import send_with_retries
from coordinator.dispatch.channels import email_channel, sms_channel
from coordinator.embedded import free_port, start_redis, wait_for_port
from coordinator.keys import Keys
from coordinator.settings import Settings
from coordinator.state import connect

SID, TOKEN = "AC" + "0" * 32, "bench-token"
TEXT = "[Loa Hà Nội] Cảnh báo ngập úng tại Quận Ba Đình. Tránh vùng ngập. Khẩn cấp: 114."


async def timed(count: int, one: Callable[[int], Awaitable[None]], concurrency: int
                ) -> dict[str, float]:
    """Run `one(i)` for every i with bounded concurrency; rate and p99 latency."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def run(i: int) -> None:
        async with sem:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    return {"per_second": round(count / elapsed, 1),
            "p99_handoff_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 2)}


async def bench(settings: Settings, count: int, sms_url: str, smtp_port: int
                ) -> dict[str, object]:
    redis = connect(settings.redis_url or "")
    sms = sms_channel(settings, redis, Keys("bench"))
    email = email_channel(settings)
    results: dict[str, object] = {}
    try:
        async def loa_sms(i: int) -> None:
            await send_with_retries(sms, OutboundMessage(
                id=f"s{i}", recipient=f"+8497{i:07d}", text=TEXT), attempts=5)

        async def loa_email(i: int) -> None:
            await send_with_retries(email, OutboundMessage(
                id=f"e{i}", recipient=f"d{i}@dan.example", subject="Cảnh báo", text=TEXT,
                html=f"<p>{TEXT}</p>"), attempts=5)

        async with httpx.AsyncClient(auth=(SID, TOKEN)) as http:
            async def raw_sms(i: int) -> None:
                reply = await http.post(f"{sms_url}/2010-04-01/Accounts/{SID}/Messages.json",
                                        data={"To": f"+8498{i:07d}", "From": "+15005550006",
                                              "Body": TEXT})
                reply.raise_for_status()

            raw_smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port)
            await raw_smtp.connect()
            lock = asyncio.Lock()

            async def raw_email(i: int) -> None:
                mail = EmailMessage()
                mail["From"], mail["To"], mail["Subject"] = "a@b.example", f"r{i}@c.example", "x"
                mail.set_content(TEXT)
                async with lock:
                    await raw_smtp.send_message(mail)

            results["sms_raw"] = await timed(count, raw_sms, 16)
            results["sms_loa"] = await timed(count, loa_sms, 16)
            results["email_raw"] = await timed(count, raw_email, 16)
            results["email_loa"] = await timed(count, loa_email, 16)
            await raw_smtp.quit()
    finally:
        await sms.close()
        await email.close()
        await redis.aclose()
    for channel in ("sms", "email"):
        loa, raw = results[f"{channel}_loa"], results[f"{channel}_raw"]
        results[f"{channel}_ratio_to_raw"] = round(
            loa["per_second"] / raw["per_second"], 3)  # type: ignore[index]
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loa-bench-channels-"))
    rservice = start_redis(root / "redis", appendonly=False)
    sms_port, smtp_port = free_port(), free_port()
    env = {**os.environ, "LOA_LOG_LEVEL": "warning"}
    procs = []
    for args_ in (["sandbox", "sms", "--port", str(sms_port), "--account-sid", SID,
                   "--auth-token", TOKEN, "--no-callbacks"],
                  ["sandbox", "smtp", "--port", str(smtp_port), "--maildir", str(root / "mail")]):
        with open(root / f"{args_[1]}.log", "ab") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "coordinator.cli", *args_],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        wait_for_port(sms_port, 30)
        wait_for_port(smtp_port, 30)
        settings = Settings(redis_url=rservice.url, twilio_account_sid=SID,
                            twilio_auth_token=SecretStr(TOKEN),
                            twilio_from_number="+15005550006",
                            twilio_base_url=f"http://127.0.0.1:{sms_port}",
                            sms_rate_per_s=1_000_000.0, smtp_host="127.0.0.1",
                            smtp_port=smtp_port,
                            # status callbacks go back to the sandbox (a quick 404): nothing
                            # else listens in this benchmark
                            public_base_url=f"http://127.0.0.1:{sms_port}")
        results = asyncio.run(bench(settings, args.messages, f"http://127.0.0.1:{sms_port}",
                                    smtp_port))
        print(json.dumps({"benchmark": "channels", "messages": args.messages, **results},
                         indent=2))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        rservice.stop()


if __name__ == "__main__":
    main()
