"""Benchmark: the web process's CPU time per provider status callback, over HTTP.

    flock /tmp/loa-heavy.lock .venv/bin/python bench/status_callbacks_http.py --callbacks 20000

A fan-out of N SMS brings about 2N status callbacks, each a signed POST to
/hooks/twilio/status. This starts the embedded stack (as bench/latency.py does), seeds N
handed-over SMS deliveries, and posts one signed "delivered" callback for each,
`--concurrency` at once from this process (aiohttp). Prints JSON: callbacks per second,
the web process's CPU time per callback (from /proc), the answers' status codes, and how
many deliveries Redis then holds as delivered (all of them, or the run is not valid).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _measure import cpu_s  # bench/ is the script's folder
from latency import PREFIX, Stack
from twilio.request_validator import RequestValidator

from coordinator.keys import Keys

ACCOUNT = "AC" + "0" * 32


async def post_all(url: str, token: str, n: int, concurrency: int, web_pid: int
                   ) -> dict[str, Any]:
    """Post the N callbacks; the rate and the web's CPU per callback."""
    signer = RequestValidator(token)
    codes: dict[int, int] = {}
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            form = {"MessageSid": f"SM{i:032x}", "MessageStatus": "delivered",
                    "AccountSid": ACCOUNT}
            headers = {"X-Twilio-Signature": signer.compute_signature(url, form)}
            async with gate, session.post(url, data=form, headers=headers) as answer:
                await answer.read()
                codes[answer.status] = codes.get(answer.status, 0) + 1

        cpu_before, began = cpu_s(web_pid), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        took, cpu = time.perf_counter() - began, cpu_s(web_pid) - cpu_before
    return {"callbacks": n, "seconds": round(took, 2), "per_s": round(n / took),
            "web_cpu_us_per_callback": round(cpu / n * 1e6, 1), "status_codes": codes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callbacks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loa-bench-callbacks-"))
    stack = Stack.start(root)
    try:
        r, keys = stack.redis(), Keys(PREFIX)
        pipe = r.pipeline(transaction=False)
        for i in range(args.callbacks):
            pipe.hset(keys.delivery(f"d{i}"), mapping={
                "status": "sent", "statement_id": "STM-00001-1", "channel": "sms"})
            pipe.set(keys.provider_message(f"SM{i:032x}"), f"d{i}")
        pipe.execute()
        figures = asyncio.run(post_all(stack.web_url + "/hooks/twilio/status",
                                       stack.env["LOA_TWILIO_AUTH_TOKEN"], args.callbacks,
                                       args.concurrency, stack.procs["web"].pid))
        time.sleep(0.5)  # the last batch's write
        pipe = r.pipeline(transaction=False)
        for i in range(args.callbacks):
            pipe.hget(keys.delivery(f"d{i}"), "status")
        figures["delivered_in_redis"] = sum(s == "delivered" for s in pipe.execute())
        print(json.dumps(figures, indent=2))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
