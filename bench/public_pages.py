"""Benchmark: the public page under load, and live pages hearing of a publication.

Starts the embedded stack (as bench/latency.py does: Tansu, Redis, the SMS sandbox, one
worker, one web process), publishes `--statements` flood statements through the API and
`loa approve`, then:

- `GET /` with `wrk` (Debian's package; its own process, closed loop) at `--connections`
  concurrent connections each, for `--seconds`: requests/s served, latency p50/p99,
  non-2xx answers (503s past the admission bound), socket errors;
- `GET /` open loop at each of `--rates` requests/s (bench/_load_client.py, its own
  process): what was served, p50/p99/max from each request's scheduled start, errors;
- `--pages` live pages (each count in turn) on `/events` (bench/_sse_client.py, its own
  process) while one more statement is approved: from the approval to each page hearing
  it, p50/p99/max, and pages that never did.

Each load client's own CPU time is reported: it shares the two cores with what it
measures. Prints one JSON object.

    .venv/bin/python bench/public_pages.py
    .venv/bin/python bench/public_pages.py --connections 50 --rates 300 --pages 1000
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _report_times import epoch, quantiles
from fanout import make_token
from latency import PREFIX, Stack

from coordinator.city import load_city
from coordinator.keys import Keys
from coordinator.settings import Settings

HERE = Path(__file__).parent


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Publisher:
    """Flood statements published through the API, one ward each, approved by the CLI."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.officer = make_token(stack.env, "bench-officer", "duty_officer")
        self.approvers: dict[str, str] = {}
        city = load_city(Settings().config_dir, Settings().area_map)
        self.wards = iter(sorted((code for code, area in city.areas.items() if area.depth),
                                 key=lambda code: (-city.areas[code].depth, code)))

    def file(self) -> str:
        """File a report in a fresh area; the id of its incident's approval request."""
        r, keys = self.stack.redis(), Keys(PREFIX)
        with httpx.Client(base_url=self.stack.web_url, timeout=30,
                          headers={"Authorization": f"Bearer {self.officer}"}) as http:
            report = http.post("/api/reports", json={
                "kind": "flood", "severity": "severe", "area": next(self.wards),
                "title": "Ngập sâu, nhiều phương tiện chết máy",
                "details": "Nước ngập 40 cm"}).json()["id"]
        deadline = time.time() + 60
        while time.time() < deadline:
            row = r.hget(keys.report(report), "incident")
            approval = r.hget(keys.incident(row), "approval_id") if row else None
            if approval:
                return str(approval)
            time.sleep(0.05)
        raise TimeoutError(f"no approval request for {report}")

    def approve(self, approval: str) -> str:
        """Approve; the statement id, once it is published."""
        r, keys = self.stack.redis(), Keys(PREFIX)
        holder = json.loads(r.hget(keys.approval(approval), "holders"))[0]
        if holder not in self.approvers:
            self.approvers[holder] = make_token(self.stack.env, f"bench-approver-{holder}",
                                                "approver", f"--person={holder}")
        subprocess.run([sys.executable, "-m", "coordinator.cli", "approve", approval,
                        "--token", self.approvers[holder]], env=self.stack.env, check=True,
                       capture_output=True)
        statement_id = approval.replace("APR-", "STM-")
        deadline = time.time() + 30
        while not r.hget(keys.statement(statement_id), "published_at"):
            if time.time() > deadline:
                raise TimeoutError(f"{statement_id} not published")
            time.sleep(0.02)
        return statement_id


def run_wrk(url: str, connections: int, seconds: float) -> dict[str, Any]:
    """`wrk` closed loop on `url`; what it printed, parsed."""
    before = children_cpu()
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s",
                           "--latency", "--timeout", "10s", url],
                          capture_output=True, text=True, check=True)
    text = done.stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    def ms(label: str) -> float:
        found = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", text)
        if not found:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
        return round(float(found.group(1)) * scale, 2)

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text)
    return {"connections": connections, "seconds": seconds,
            "requests_per_s": number(r"Requests/sec:\s+([\d.]+)"),
            "p50_ms": ms("50"), "p99_ms": ms("99"),
            "requests": int(number(r"(\d+) requests in")),
            "non_2xx": int(number(r"Non-2xx or 3xx responses: (\d+)")),
            "socket_errors": [int(g) for g in errors.groups()] if errors else [0, 0, 0, 0],
            "client_cpu_s": round(children_cpu() - before, 2)}


def run_open_loop(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """`GET /` at a fixed rate from bench/_load_client.py."""
    before = children_cpu()
    done = subprocess.run([sys.executable, str(HERE / "_load_client.py"), "--url", url,
                           "--get", "/", "--rate", str(rate), "--seconds", str(seconds)],
                          capture_output=True, text=True, check=True)
    results = json.loads(done.stdout)["results"]
    ok = [row[1] / 1000 for row in results if row[2] == 200]
    return {"rate": rate, "seconds": seconds, "sent": len(results), "served": len(ok),
            "refused_503": sum(1 for row in results if row[2] == 503),
            "errors": sum(1 for row in results if row[2] not in (200, 503)),
            **quantiles(ok), "client_cpu_s": round(children_cpu() - before, 2)}


def run_live(stack: Stack, publisher: Publisher, pages: int, root: Path) -> dict[str, Any]:
    """`pages` live pages; one statement approved; when each page heard of it."""
    ready, wanted = root / f"ready-{pages}", root / f"statement-{pages}"
    approval = publisher.file()
    before = children_cpu()
    client = subprocess.Popen([sys.executable, str(HERE / "_sse_client.py"), "--url",
                               stack.web_url, "--pages", str(pages), "--ready", str(ready),
                               "--statement-file", str(wanted), "--seconds", "60"],
                              stdout=subprocess.PIPE, text=True)
    while not ready.exists():
        time.sleep(0.1)
    time.sleep(1.0)
    statement_id = publisher.approve(approval)
    wanted.write_text(statement_id)
    out = json.loads(client.communicate(timeout=180)[0])
    statement = json.loads(stack.redis().hget(Keys(PREFIX).statement(statement_id),
                                              "statement"))
    approved_at = epoch(statement["approved_at"])
    heard = [t - approved_at for t in out["heard"] if t is not None]
    return {"pages": pages, "opened": out["opened"], "heard": len(heard),
            "never": pages - len(heard), **quantiles(heard),
            "client_cpu_s": round(children_cpu() - before, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--statements", type=int, default=20)
    parser.add_argument("--connections", type=int, nargs="*", default=[50, 400])
    parser.add_argument("--rates", type=float, nargs="*", default=[300, 1000, 2000])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pages", type=int, nargs="*", default=[1000, 5000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loa-bench-public-") as tmp:
        root = Path(tmp)
        stack = Stack.start(root)
        try:
            publisher = Publisher(stack)
            for _ in range(args.statements):
                publisher.approve(publisher.file())
            page = httpx.get(f"{stack.web_url}/", timeout=30)
            result: dict[str, Any] = {
                "statements_on_page": page.text.count('class="statement '),
                "page_bytes": len(page.content),
                "wrk": [run_wrk(f"{stack.web_url}/", c, args.seconds)
                        for c in args.connections],
                "open_loop": [run_open_loop(stack.web_url, rate, args.seconds)
                              for rate in args.rates],
                "live": [run_live(stack, publisher, n, root) for n in args.pages]}
        finally:
            stack.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
