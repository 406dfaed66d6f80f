"""Benchmark: how long a report takes to reach its approver, through the HTTP API, under load.

Starts the embedded stack (Tansu, Redis syncing every write as `loa up` runs it, the SMS
sandbox, one worker, one web process), then drives it from a separate load-client process
(bench/_load_client.py) with a duty officer's API token, open loop:

- `own` mix: every report its own incident, at each of `--rates` for `--seconds`;
- `storm` mix: `--storm-rate` reports/s about `--storm-incidents` incidents (many people
  reporting the same few floods), checking that no report is lost or attached to another
  incident;
- approvals: `--approvals` incidents approved one at a time (`--approve-by cli`: `loa
  approve`; `sms`: the approver answers the prompt's SMS through the sandbox), each
  statement going to `--subscribers` SMS subscribers.

Times come from Loa's own records in Redis (the report's `received_at`, the approval
request's `created_at`, the prompt's and the statement SMS's hand-over in the audit trail)
and, per hop, from the worker's `/metrics` histograms; the web's own part of each accept
from the web's `/metrics` (`http_accept_in_web`; the rest of `http_accept` is outside it:
sockets, the HTTP server's parsing, the load client, a busy CPU). The prompts' SMS channel is not
throttled, so the pipeline is what is measured. Prints one JSON object.

    .venv/bin/python bench/latency.py
    .venv/bin/python bench/latency.py --rates 50 --seconds 10 --storm-rate 0
    .venv/bin/python bench/latency.py --rates 200 --storm-rate 0 --redis-fsync everysec
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from _measure import (  # bench/ is the script's folder
    SyncRedis,
    cpu_s,
    reference_work_ms,
    sync_redis,
    wait_for_beats,
)
from _report_times import epoch, first_prompts, planned, quantiles
from fanout import make_token, seed
from prometheus_client.parser import text_string_to_metric_families

from coordinator.broker import ensure_topics
from coordinator.city import load_city
from coordinator.embedded import Service, free_port, start_redis, start_tansu, wait_for_port
from coordinator.keys import Keys
from coordinator.settings import Settings

HERE = Path(__file__).parent
PREFIX = "bench"
ANSWER_CODE = re.compile(r"YES (\d{6}) ")  # in an approval prompt's SMS
KINDS = ["flood", "fire", "power-outage", "outbreak", "collapse", "traffic"]


@dataclass
class Stack:
    """The embedded stack of one run, under one folder."""

    root: Path
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics_url: str = ""
    web_url: str = ""
    monitor_token: str = ""  # reads the web's /metrics

    @classmethod
    def start(cls, root: Path, workers: int = 1, fsync: Literal["always", "everysec"] = "always",
              **env: str) -> Stack:
        broker = start_tansu(log_path=root / "broker.log")
        # `always` as `loa up` runs it; `everysec` shows what syncing every write costs
        rservice = start_redis(root / "redis", appendonly=True, appendfsync=fsync)
        sms_port, web_port, metrics_port = free_port(), free_port(), free_port()
        stack = cls(root, {
            **os.environ, "LOA_KAFKA_URL": broker.url, "LOA_REDIS_URL": rservice.nearest_url,
            "LOA_REDIS_PREFIX": PREFIX, "LOA_LOG_LEVEL": "warning",
            "LOA_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "LOA_TWILIO_AUTH_TOKEN": "t",
            "LOA_TWILIO_FROM_NUMBER": "+15005550006",
            "LOA_TWILIO_BASE_URL": f"http://127.0.0.1:{sms_port}",
            "LOA_WEB_PORT": str(web_port), "LOA_SMS_RATE_PER_S": "100000",
            "LOA_LINK_SECRET": "bench", "LOA_SECRET_KEY": "bench-secret-key",
            "LOA_WORKER_METRICS_PORT": str(metrics_port), **env},
            [broker, rservice])
        stack.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        stack.web_url = f"http://127.0.0.1:{web_port}"
        try:  # a part that does not come up stops the others, not leaving them running
            stack.bring_up(sms_port, web_port, metrics_port, workers)
            stack.monitor_token = make_token(stack.env, "bench-monitor", "monitor")
        except BaseException:
            stack.stop()
            raise
        return stack

    def bring_up(self, sms_port: int, web_port: int, metrics_port: int, workers: int) -> None:
        """The topics, then the SMS sandbox, the workers, web and scheduler, each seen up."""
        asyncio.run(ensure_topics(Settings(kafka_url=self.env["LOA_KAFKA_URL"],
                                           redis_url=self.env["LOA_REDIS_URL"],
                                           redis_prefix=PREFIX)))
        self.spawn("sms", ["sandbox", "sms", "--port", str(sms_port)])
        wait_for_port(sms_port, 30)
        self.spawn("worker", ["worker"])
        for number in range(2, workers + 1):  # more workers share the topics' partitions
            self.spawn(f"worker-{number}", ["worker"], LOA_WORKER_ID=f"worker-{number}",
                       LOA_WORKER_METRICS_PORT=str(free_port()))
        self.spawn("web", ["web"])
        self.spawn("scheduler", ["scheduler"])  # as `loa up` runs it: timers, the seal
        wait_for_port(web_port, 60, self.procs["web"])
        r, keys = self.redis(), Keys(PREFIX)
        wait_for_beats(r, {keys.worker_heartbeat(f"worker-{n}"):
                           self.procs[f"worker-{n}" if n > 1 else "worker"]
                           for n in range(1, workers + 1)}
                       | {keys.scheduler_heartbeat(): self.procs["scheduler"]})
        r.close()
        wait_for_port(metrics_port, 30)

    def spawn(self, name: str, args: list[str], **env: str) -> None:
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "coordinator.cli", *args], env={**self.env, **env},
                stdout=log, stderr=subprocess.STDOUT)

    def redis(self) -> SyncRedis:
        return sync_redis(self.env["LOA_REDIS_URL"])

    def pids(self) -> dict[str, int]:
        return {**{name: proc.pid for name, proc in self.procs.items() if name != "sms"},
                "redis": self.services[1].proc.pid, "broker": self.services[0].proc.pid}

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for service in self.services:
            service.stop()


def histograms(metrics_url: str, names: tuple[str, ...] = ("loa_hop_wait_seconds",
                                                            "loa_handler_seconds"),
               token: str = "") -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Each histogram `names` of a /metrics (the worker's; the web's with a monitor's
    `token`), per topic: (name, topic or "") -> [(le, count)]."""
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    text = httpx.get(metrics_url, timeout=30, headers=headers).text
    for family in text_string_to_metric_families(text):
        if family.name not in names:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = (family.name, sample.labels.get("topic", ""))
                found.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
    return found


def web_accept(stack: Stack) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """The web's own time answering `POST /api/reports` so far (loa_report_accept_seconds)."""
    return histograms(f"{stack.web_url}/metrics", ("loa_report_accept_seconds",),
                      stack.monitor_token)


def in_web(before: dict[tuple[str, str], list[tuple[float, float]]],
           after: dict[tuple[str, str], list[tuple[float, float]]]) -> dict[str, Any]:
    """p50 and p99 (ms) of the web's own part of the accepts over a run."""
    figures = hop_quantiles(before, after).get("report_accept", {}).get("", {})
    return {k: v for k, v in figures.items() if k != "events"}


def hop_quantiles(before: dict[tuple[str, str], list[tuple[float, float]]],
                  after: dict[tuple[str, str], list[tuple[float, float]]]
                  ) -> dict[str, dict[str, Any]]:
    """p50 and p99 (ms) per histogram and topic over the run, interpolated within buckets."""
    out: dict[str, dict[str, Any]] = {}
    for key, buckets in after.items():
        old = dict(before.get(key, []))
        counts = [(le, n - old.get(le, 0.0)) for le, n in sorted(buckets)]
        total = counts[-1][1]
        if total <= 0:
            continue

        def at(share: float, counts: list[tuple[float, float]] = counts,
               total: float = total) -> float:
            goal, low, below = share * total, 0.0, 0.0
            for le, n in counts:
                if n >= goal:
                    if le == float("inf"):
                        return low
                    return low + (le - low) * (goal - below) / max(n - below, 1e-9)
                low, below = le, n
            return low

        name = key[0].removeprefix("loa_").removesuffix("_seconds")
        out.setdefault(name, {})[key[1]] = {"events": int(total),
                                            "p50_ms": round(at(0.5) * 1000, 1),
                                            "p99_ms": round(at(0.99) * 1000, 1)}
    return out


def drive(stack: Stack, token: str, rate: float, seconds: float,
          bodies: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
    """Run the load client in its own process; its results, and when it finished
    (time.time())."""
    bodies_file = stack.root / "bodies.json"
    bodies_file.write_text(json.dumps(bodies))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, str(HERE / "_load_client.py"), "--url",
                           stack.web_url, "--token", token, "--rate", str(rate), "--seconds",
                           str(seconds), "--bodies", str(bodies_file)],
                          capture_output=True, text=True, check=True)
    finished = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out: dict[str, Any] = json.loads(done.stdout)
    out["cpu_s_measured"] = round((after.ru_utime + after.ru_stime)
                                  - (before.ru_utime + before.ru_stime), 2)
    return out, finished


def run_own(stack: Stack, token: str, rate: float, seconds: float) -> dict[str, Any]:
    """Every report its own incident (the correlation window is a microsecond)."""
    r, keys = stack.redis(), Keys(PREFIX)
    areas = sorted(load_city(Settings().config_dir, Settings().area_map).areas)
    bodies = [{"kind": KINDS[i % len(KINDS)], "severity": "severe",
               "area": areas[i % len(areas)], "title": f"Bench report {i}"}
              for i in range(len(KINDS) * len(areas))]
    pids = stack.pids()
    cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
    hist_before, web_before = histograms(stack.metrics_url), web_accept(stack)
    commands_before = redis_commands(r)
    requests_before = r.zcard(keys.approvals())
    client, finished = drive(stack, token, rate, seconds, bodies)
    accepted = [row[3] for row in client["results"] if row[2] == 202]
    deadline = time.time() + 120
    while r.zcard(keys.approvals()) < len(accepted) + requests_before and time.time() < deadline:
        time.sleep(0.02)  # one command a round: the bench's reads stay out of the count
    commands = redis_commands(r) - commands_before
    found = planned(r, keys, accepted)
    done = [x for x in found.values() if x["requested_at"] is not None]
    wait_for_prompts(r, keys, found)
    prompts = first_prompts(r, keys, sorted({x["incident"] for x in found.values()}))
    cpu = {name: round(cpu_s(pid) - cpu_before[name], 2) for name, pid in pids.items()}
    time.sleep(1.5)  # the worker's last observations are in /metrics
    hops = hop_quantiles(hist_before, histograms(stack.metrics_url))
    web_part = in_web(web_before, web_accept(stack))
    last_requested = max((x["requested_at"] for x in done), default=finished)
    result = {
        "mix": "own", "rate": rate, "seconds": seconds,
        "offered": len(client["results"]), "accepted": len(accepted),
        "refused_or_failed": len(client["results"]) - len(accepted),
        "planned": len(done),
        "http_accept": quantiles([row[1] / 1000 for row in client["results"]
                                  if row[2] == 202]),
        "http_accept_in_web": web_part,
        "report_to_approval_request": quantiles(
            [x["requested_at"] - x["received_at"] for x in done]),
        "report_to_prompt_handed_over": quantiles(
            [prompts[x["incident"]] - x["received_at"] for x in found.values()
             if x["incident"] in prompts]),
        "prompts_handed_over": len(prompts),
        "backlog_drained_s_after_run": round(max(0.0, last_requested - finished), 3),
        "hops": hops,
        "loa_cpu_s": cpu,
        "loa_cpu_ms_per_report": round(sum(cpu.values()) / max(len(accepted), 1) * 1000, 2),
        "redis_commands_per_report": round(commands / max(len(accepted), 1), 1),
        "broker_events_per_report": round(sum(
            t["events"] for t in hops.get("hop_wait", {}).values()) / max(len(accepted), 1), 2),
        "load_client_cpu_s": client["cpu_s_measured"],
    }
    r.close()
    return result


def redis_commands(r: SyncRedis) -> int:
    """Commands Redis has processed so far (this bench's own reads included)."""
    return int(r.info("stats")["total_commands_processed"])


def wait_for_prompts(r: SyncRedis, keys: Keys, found: dict[str, dict[str, Any]],
                     settle_s: float = 2.0) -> None:
    """Until no new prompt has been handed over for `settle_s`. (Not every incident gets an
    SMS prompt: approvers whose preferred channel is the web or email are not sent one, and
    this stack has no SMTP server.)"""
    incidents = sorted({x["incident"] for x in found.values()})
    seen, since = -1, time.time()
    while time.time() - since < settle_s:
        now = len(first_prompts(r, keys, incidents))
        if now != seen:
            seen, since = now, time.time()
        time.sleep(0.2)


def run_storm(stack: Stack, token: str, rate: float, seconds: float,
              incidents: int) -> dict[str, Any]:
    """Many reports about a few incidents: none lost, none attached to another incident."""
    r, keys = stack.redis(), Keys(PREFIX)
    areas = sorted(load_city(Settings().config_dir, Settings().area_map).areas)[:incidents]
    bodies = [{"kind": "flood", "severity": "severe", "area": area,
               "title": f"Ngập sâu ({n})"} for n in range(5) for area in areas]
    pids = stack.pids()
    cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
    hist_before, web_before = histograms(stack.metrics_url), web_accept(stack)
    client, finished = drive(stack, token, rate, seconds, bodies)
    accepted = [row[3] for row in client["results"] if row[2] == 202]
    deadline = time.time() + 120
    while True:
        found = planned(r, keys, accepted)
        if len(found) == len(accepted) or time.time() > deadline:
            break
        time.sleep(0.05)
    taken_in = time.time()
    cpu = {name: round(cpu_s(pid) - cpu_before[name], 2) for name, pid in pids.items()}
    by_incident: dict[str, set[tuple[str, str]]] = {}
    for x in found.values():
        by_incident.setdefault(x["incident"], set()).add((x["kind"], x["area"]))
    pipe = r.pipeline(transaction=False)
    for incident in by_incident:
        pipe.hmget(keys.incident(incident), "kind", "area")
    wrong = sum(1 for (incident, seen), (kind, area) in zip(
        by_incident.items(), pipe.execute(), strict=True) if seen != {(kind, area)})
    opening = [x for x in found.values() if x["opened"] and x["requested_at"] is not None]
    time.sleep(1.5)
    result = {
        "mix": "storm", "rate": rate, "seconds": seconds, "incidents_expected": incidents,
        "offered": len(client["results"]), "accepted": len(accepted),
        "refused_or_failed": len(client["results"]) - len(accepted),
        "taken_in": len(found), "lost": len(accepted) - len(found),
        "incidents": len(by_incident), "incidents_with_a_wrong_report": wrong,
        "http_accept": quantiles([row[1] / 1000 for row in client["results"]
                                  if row[2] == 202]),
        "http_accept_in_web": in_web(web_before, web_accept(stack)),
        "report_to_approval_request_opening_reports": quantiles(
            [x["requested_at"] - x["received_at"] for x in opening]),
        "backlog_taken_in_s_after_run": round(max(0.0, taken_in - finished), 3),
        "hops": hop_quantiles(hist_before, histograms(stack.metrics_url)),
        "loa_cpu_s": cpu,
        "loa_cpu_ms_per_report": round(sum(cpu.values()) / max(len(accepted), 1) * 1000, 2),
        "load_client_cpu_s": client["cpu_s_measured"],
    }
    r.close()
    return result


def answer_by_sms(stack: Stack, phone: str, approval: str) -> None:
    """YES to the approval's prompt, from the approver's phone: the sandbox posts the reply,
    signed as Twilio signs it, to the web's webhook, which waits for the decision's outcome
    (and the approver gets the answer by SMS, as on a real phone). Whether it approved is
    checked by the caller (the statement it waits for)."""
    sms_url = stack.env["LOA_TWILIO_BASE_URL"]
    code = None
    deadline = time.time() + 30
    while code is None and time.time() < deadline:
        sent = httpx.get(f"{sms_url}/_sandbox/messages", params={"to": phone}).json()
        code = next((m.group(1) for item in sent if approval in item["body"]
                     for m in [ANSWER_CODE.search(item["body"])] if m), None)
        time.sleep(0.05)
    if code is None:
        raise SystemExit(f"no SMS prompt for {approval} reached {phone} within 30 s")
    answer = httpx.post(f"{sms_url}/_sandbox/inbound", timeout=60, json={
        "from": phone, "to": stack.env["LOA_TWILIO_FROM_NUMBER"], "body": f"YES {code}",
        "url": f"{stack.web_url}/hooks/twilio/sms"}).json()
    if answer["status"] != 200:
        raise SystemExit(f"the approver's reply to {approval} was refused: {answer}")


def approve_with_cli(stack: Stack, holder: str, approval: str, tokens: dict[str, str]
                     ) -> None:
    """`loa approve` with the holder's token (made once a holder). The process exits (its
    teardown on the same two cores) up to 0.2 s after the decision is applied: sometimes
    while the statement goes out."""
    if holder not in tokens:
        tokens[holder] = make_token(stack.env, f"bench-approver-{holder}", "approver",
                                    f"--person={holder}")
    subprocess.run([sys.executable, "-m", "coordinator.cli", "approve", approval,
                    "--token", tokens[holder]], env=stack.env, check=True, capture_output=True)


def first_statement_sms(r: SyncRedis, keys: Keys, incident: str, approved_at: float,
                        deadline: float) -> float | None:
    """When the incident's first statement SMS was handed over (its audit entry), waiting
    for it until `deadline`."""
    while time.time() < deadline:
        start = f"{int(approved_at * 1000) - 1000}-0"
        for _, entry in r.xrange(keys.audit(), min=start):
            event = json.loads(entry["event"])
            detail = event.get("detail") or {}
            if (event["action"].startswith("delivery.") and event["interface"] == "sms"
                    and detail.get("purpose") == "statement"
                    and detail.get("incident") == incident):
                return epoch(event["at"])
        time.sleep(0.05)
    return None


def run_approvals(stack: Stack, token: str, count: int, subscribers: int, by: str = "cli"
                  ) -> dict[str, Any]:
    """Approve `count` statements one at a time (`by` the CLI or an SMS reply), each once
    the previous one's fan-out is over; from each statement's approval to its first SMS
    handed to the SMS endpoint, and the three hops between."""
    r, keys = stack.redis(), Keys(PREFIX)
    seed(r, keys, subscribers, share_targeted=1.0)  # all in hn-ba-dinh
    with httpx.Client(base_url=stack.web_url, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        ids = [http.post("/api/reports", json={
            "kind": "flood", "severity": "severe", "area": "hn-phuong-giang-vo",
            "title": f"Ngập sâu phố Kim Mã {i}"}).json()["id"] for i in range(count)]
    deadline = time.time() + 60
    while time.time() < deadline:
        found = planned(r, keys, ids)
        if len(found) == count and all(x["requested_at"] for x in found.values()):
            break
        time.sleep(0.1)
    waits = []
    people = load_city(Settings().config_dir, Settings().area_map).people
    tokens: dict[str, str] = {}
    hist_before = histograms(stack.metrics_url)
    for x in found.values():
        approval = r.hget(keys.incident(x["incident"]), "approval_id")
        holders = json.loads(r.hget(keys.approval(approval), "holders"))
        if by == "sms":
            by_sms = [h for h in holders if people[h].preferred_channel == "sms"]
            if not by_sms:
                raise SystemExit(f"none of {approval}'s holders {holders} is prompted by SMS")
            answer_by_sms(stack, people[by_sms[0]].phone, approval)
        else:
            approve_with_cli(stack, holders[0], approval, tokens)
        statement_id = ""
        deadline = time.time() + 30
        while not statement_id and time.time() < deadline:
            statement_id = r.hget(keys.incident(x["incident"]), "statement_id") or ""
            time.sleep(0.05)
        if r.hget(keys.approval(approval), "status") != "approved" or not statement_id:
            raise SystemExit(f"{approval} was not approved: "
                             f"{r.hget(keys.approval(approval), 'status')}")
        statement = json.loads(r.hget(keys.statement(statement_id), "statement"))
        approved_at = epoch(statement["approved_at"])
        first = first_statement_sms(r, keys, x["incident"], approved_at, time.time() + 30)
        if first is not None:
            waits.append(first - approved_at)
        # Each approval alone: the next one once this fan-out is finished, and half a
        # second more for its last status callbacks (not checked; they would compete for
        # the two cores).
        deadline = time.time() + 60
        while not r.hget(keys.dispatch(statement_id), "finished_at") and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    hops = hop_quantiles(hist_before, histograms(stack.metrics_url))
    r.close()
    # Each approval's three hops (decisions, statements, dispatch.sms): the broker's wait
    # and the handler's own time (a batch's handler runs until its last SMS is recorded).
    return {"approvals": count, "approved_by": by, "subscribers": subscribers,
            "measured": len(waits),
            "approval_to_first_statement_sms": quantiles(waits),
            "hops": {kind: {topic: figures for topic, figures in by_topic.items()
                            if topic in ("decisions", "statements", "dispatch.sms")}
                     for kind, by_topic in hops.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="50,200,500",
                        help="comma-separated report rates of the `own` mix")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--storm-rate", type=float, default=500.0, help="0 = no storm run")
    parser.add_argument("--storm-incidents", type=int, default=20)
    parser.add_argument("--approvals", type=int, default=20, help="0 = no approvals run")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--approve-by", choices=("cli", "sms"), default="cli",
                        help="how the approvals are made")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes sharing the partitions (metrics: the first's)")
    parser.add_argument("--redis-fsync", choices=("always", "everysec"), default="always",
                        help="when Redis syncs its append-only file: every write, as `loa up` "
                             "runs it, or every second (what the sync costs)")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "latency", "reference_work_ms": [reference_work_ms()],
                              "workers": args.workers,
                              "redis_fsync": args.redis_fsync, "runs": [],
                              "at": datetime.now().isoformat(timespec="seconds")}
    rates = [float(x) for x in args.rates.split(",") if x]
    for rate in rates:
        root = Path(tempfile.mkdtemp(prefix="loa-bench-latency-"))
        stack = Stack.start(root, args.workers, args.redis_fsync,
                            LOA_CORRELATION_WINDOW_S="0.000001")
        try:
            token = make_token(stack.env, "bench-duty", "duty_officer")
            result["runs"].append(run_own(stack, token, rate, args.seconds))
            if args.approvals and rate == rates[0]:
                result["approvals"] = run_approvals(stack, token, args.approvals,
                                                    args.subscribers, args.approve_by)
        finally:
            stack.stop()
    if args.storm_rate:
        root = Path(tempfile.mkdtemp(prefix="loa-bench-latency-"))
        stack = Stack.start(root, args.workers, args.redis_fsync)
        try:
            token = make_token(stack.env, "bench-duty", "duty_officer")
            result["runs"].append(run_storm(stack, token, args.storm_rate, args.seconds,
                                            args.storm_incidents))
        finally:
            stack.stop()
    result["reference_work_ms"].append(reference_work_ms())  # before, after
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
