"""Stops, crashes and replays: the path still finishes once, with nothing doubled."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from coordinator import outbox
from coordinator.broker import Producer
from coordinator.cli.main import app as cli_app
from coordinator.embedded import free_port
from coordinator.events import Decision
from coordinator.settings import REPO_ROOT
from tests.integration.factories import (
    file_report,
    post_report,
    report_body,
    wait_for_approval,
    wait_for_incident,
)
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration
MakeStack = Callable[[], Stack]


def _all_sealed(stack: Stack) -> bool:
    """True once the audit chain's head covers the trail's newest entry (the sealer runs
    about twice a second: a snapshot taken sooner would miss that one link)."""
    newest = stack.redis.xrevrange(stack.keys.audit(), count=1)
    return bool(newest) and stack.redis.hget(stack.keys.audit_head(), "last") == newest[0][0]


def snapshot(stack: Stack) -> dict[str, Any]:
    """Every key Loa wrote, with its content (streams by length), minus liveness keys and
    the recovery round's few-second lock."""
    state: dict[str, Any] = {}
    for key in sorted(stack.redis.scan_iter(f"{stack.keys.prefix}:*")):
        if ":worker:" in key or ":timers:" in key:  # liveness; APScheduler's pickled jobs
            continue
        if key == stack.keys.recovery_lock():
            continue
        kind = stack.redis.type(key)
        if kind == "hash":
            state[key] = stack.redis.hgetall(key)
        elif kind == "list":
            state[key] = stack.redis.lrange(key, 0, -1)
        elif kind == "zset":
            state[key] = stack.redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            state[key] = sorted(stack.redis.smembers(key))
        elif kind == "stream":
            state[key] = stack.redis.xlen(key)
        else:
            state[key] = stack.redis.get(key)
    return state


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_worker_restarted_mid_way_finishes_the_path_once(make_stack: MakeStack,
                                                           how: int) -> None:
    """Worker stopped (or killed) after the approval request; the decision is sent while no
    worker runs; a new worker applies it and publishes once."""
    stack = make_stack()
    stack.start_worker_and_web()
    report_id = post_report(stack, report_body("hn-ba-dinh-kim-ma"))
    incident_id, approval = wait_for_approval(stack, report_id)
    stack.stop_worker(sig=how)

    # `loa approve` waits for the outcome: run it in the background while the worker is down.
    approve = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "approve", approval["id"],
         *stack.as_person(approval["approvers"][0])], env=stack.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: stack.redis.exists(stack.keys.approval(approval["id"])), 5, "approval")
        stack.start_worker()
        _out, err = approve.communicate(timeout=60)
    finally:
        if approve.poll() is None:
            approve.kill()
            approve.communicate()
    assert approve.returncode == 0, err
    stack.wait_for_status(incident_id, "published")
    actions = stack.timeline_actions(incident_id)
    assert actions == ["incident.opened", "playbook.selected", "draft.rendered",
                       "approval.requested", "approval.approved", "statement.published"]
    assert stack.redis.zcard(stack.keys.statements_published()) == 1
    assert stack.redis.zcard(stack.keys.approvals()) == 1


def test_a_second_worker_of_one_id_is_refused_but_a_dead_ones_heartbeat_stops_nothing(
        make_stack: MakeStack) -> None:
    """Two processes of one LOA_WORKER_ID would each take the other's deliveries in flight
    for a dead worker's, and send them twice: the second refuses to start and names the
    setting. A heartbeat a worker killed just now left behind is not renewed: a worker of
    that id starts after all."""
    stack = make_stack()
    stack.start_worker("w1")
    twin = subprocess.run([sys.executable, "-m", "coordinator.cli", "worker"],
                          env={**stack.env, "LOA_WORKER_ID": "w1"}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert twin.returncode == 1
    assert "another worker is running as 'w1'" in twin.stderr, twin.stderr
    assert "LOA_WORKER_ID" in twin.stderr
    stack.stop_worker("w1", sig=signal.SIGKILL)
    key = stack.keys.worker_heartbeat("w1")
    assert stack.redis.pttl(key) > 5_000  # left behind by the killed worker
    stack.start_worker("w1", keep_heartbeat=True)
    assert stack.redis.pttl(key) > 8_000  # the new one's


def test_replaying_every_topic_from_the_start_changes_nothing(make_stack: MakeStack) -> None:
    """A worker in a new consumer group reads every topic from offset 0: the state in Redis
    (incidents, timelines, approvals, statements, audit) stays exactly as it was."""
    stack = make_stack()
    stack.start_worker_and_web()
    published = post_report(stack, report_body("hn-hoan-kiem-hang-bac"))
    rejected = post_report(stack, report_body("hn-dong-da", kind="outbreak"))
    joined = post_report(stack, report_body("hn-hoan-kiem-hang-bac"))
    for report_id, verdict in ((published, "approve"), (rejected, "reject")):
        _incident_id, approval = wait_for_approval(stack, report_id)
        args = ["--reason", "chưa đủ căn cứ"] if verdict == "reject" else []
        done = stack.cli(verdict, approval["id"], *stack.as_person(approval["approvers"][0]), *args)
        assert done.returncode == 0, done.stderr
    wait_for_incident(stack, joined, 30)
    stack.wait_for_status(stack.incident_of(published) or "", "published")
    wait_for(lambda: _all_sealed(stack), 10, "the audit chain to seal the newest entry")
    before = snapshot(stack)

    stack.stop_worker()
    metrics_port = free_port()
    stack.start_worker("replayer", LOA_APP_ID="loa-replay",
                       LOA_WORKER_METRICS_PORT=str(metrics_port))
    # The replayer is done once it has re-read the statements topic (its last stage):
    # wait until its consumer group has committed offsets past every message.
    wait_for(lambda: _group_caught_up(stack, "loa-replay"), 60, "the replay to finish")
    assert snapshot(stack) == before
    # ... and the replay really re-read everything: the replayer's own counters show each
    # report taken in again (as a replay, never as new) and both decisions applied again.
    counted = worker_counters(metrics_port)
    assert counted[("loa_reports_taken_in_total", "replay")] == 3
    assert ("loa_reports_taken_in_total", "new") not in counted
    assert sum(n for (name, _), n in counted.items() if name == "loa_decisions_total") == 2


def worker_counters(metrics_port: int) -> dict[tuple[str, str], float]:
    """The counters a worker's /metrics shows: (sample name, its `outcome` label) -> value."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return {(sample.name, sample.labels.get("outcome", "")): sample.value
            for family in text_string_to_metric_families(text) if family.type == "counter"
            for sample in family.samples if sample.name.endswith("_total")}


def _group_caught_up(stack: Stack, group: str) -> bool:
    import asyncio

    from aiokafka import TopicPartition
    from aiokafka.consumer import AIOKafkaConsumer

    from coordinator import topics
    from coordinator.broker import bootstrap_servers

    async def check() -> bool:
        servers = bootstrap_servers(stack.broker.url)
        # A consumer that never subscribes does not join the group; it only asks for its offsets.
        group_view = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group,
                                      enable_auto_commit=False)
        await group_view.start()
        try:
            wanted = [TopicPartition(spec.name, p)
                      for spec in (topics.REPORTS, topics.INCIDENT_EVENTS, topics.DECISIONS,
                                   topics.STATEMENTS)
                      for p in range(spec.partitions(3))]  # the default LOA_TOPIC_PARTITIONS
            ends = await group_view.end_offsets(wanted)
            for tp in wanted:
                done = await group_view.committed(tp)
                # Tansu's end offset may trail the true end (DESIGN.md), never lead it.
                if ends[tp] > 0 and (done is None or done < ends[tp]):
                    return False
            return True
        finally:
            await group_view.stop()

    return asyncio.run(check())


def test_a_report_survives_a_broker_restart(make_stack: MakeStack) -> None:
    """Accepted (202) while no worker runs; the broker restarts empty; the worker then
    starts: the report comes back from the Redis outbox and becomes one incident."""
    stack = make_stack()
    stack.start_web()
    report_id = post_report(stack, report_body("hn-nam-tu-liem"))
    assert stack.redis.hexists(stack.keys.outbox(), report_id)
    stack.restart_broker()
    stack.start_worker()
    incident_id = wait_for_incident(stack, report_id, 60)
    stack.wait_for_status(incident_id, "awaiting_approval")
    wait_for(lambda: not stack.redis.hexists(stack.keys.outbox(), report_id), 10, "outbox clear")
    # Sent again more than once is fine; taken in more than once is not.
    assert stack.timeline_actions(incident_id).count("incident.opened") == 1
    assert stack.redis.zcard(stack.keys.incidents()) == 1


def test_a_report_filed_while_the_broker_is_down_is_accepted_then_taken_in(
        make_stack: MakeStack) -> None:
    """The broker is down: a report is still accepted (202) once it is in the Redis
    outbox, and said so in the web's log; once the broker is back, the worker takes it in
    from there."""
    stack = make_stack()
    stack.start_web()
    stack.broker.stop()
    report_id = post_report(stack, report_body("hn-tay-ho"))
    assert stack.redis.hexists(stack.keys.outbox(), report_id)
    wait_for(lambda: "report kept; the worker sends it from the outbox" in
             (stack.root / "web.log").read_text() or None, 30, "the web saying so")
    stack.restart_broker()
    stack.start_worker()
    incident_id = wait_for_incident(stack, report_id, 60)
    stack.wait_for_status(incident_id, "awaiting_approval")


def test_a_web_started_while_the_broker_is_down_connects_once_it_is_back(
        make_stack: MakeStack) -> None:
    """The broker is down as the web starts: reports are accepted and kept. Once the broker
    is back, the web connects by itself, and a report goes straight on the broker: the
    worker takes it in though its resend from the outbox is an hour away."""
    stack = make_stack(LOA_OUTBOX_RESEND_AFTER_S="3600")
    stack.broker.stop()
    stack.start_web()
    kept = post_report(stack, report_body("hn-tay-ho"))
    assert stack.redis.hexists(stack.keys.outbox(), kept)
    stack.restart_broker()
    stack.start_worker()
    filed: list[str] = []

    def one_taken_in() -> str | None:
        filed.append(post_report(stack, report_body("hn-ba-dinh-ngoc-ha")))
        time.sleep(1)
        return next((i for r in filed if (i := stack.incident_of(r))), None)

    wait_for(one_taken_in, 60, "a report filed after the broker came back taken in")
    assert stack.incident_of(kept) is None  # left to the outbox's resend, an hour away


def test_a_parked_decision_goes_out_again_when_the_broker_comes_back(
        make_stack: MakeStack) -> None:
    """A decision kept and parked (sent six times, its last send just now: not due for an
    hour) while the worker runs; the broker restarts empty: the worker's new assignment
    sends the parked ones again at once, and the decision is applied."""
    stack = make_stack()
    stack.start_worker_and_web()
    incident_id = file_report(stack, report_body("hn-ba-dinh-ngoc-ha"))
    approval_id = wait_for(lambda: stack.incident(incident_id).get("approval_id"), 30,
                           "the approval request")
    decision = Decision(id="dec-parked-0001", approval_id=approval_id,
                        approver_id="nguyen-van-an", verdict="approve")
    stack.redis.hset(stack.keys.followups(), "decision:dec-parked-0001", json.dumps({
        "topic": "decisions", "key": approval_id, "value": decision.to_bytes().decode(),
        "at": time.time(), "sends": outbox.MAX_SENDS, "first": time.time() - 1000}))
    time.sleep(2)  # rounds of the drain: not due, not sent
    assert stack.redis.hget(stack.keys.approval(approval_id), "status") == "pending"
    stack.restart_broker()
    wait_for(lambda: stack.redis.hget(stack.keys.approval(approval_id), "status")
             == "approved" or None, 60, "the parked decision applied")
    wait_for(lambda: not stack.redis.hexists(stack.keys.followups(),
                                             "decision:dec-parked-0001") or None, 10,
             "the decision forgotten")


def test_a_stopped_worker_closes_its_channels(make_stack: Callable[..., Stack]) -> None:
    """SIGTERM after an SMS went out: the SDK's HTTP session is closed on the way out (no
    "Unclosed client session" in the log)."""
    stack = make_stack(sms=True)
    stack.start_worker_and_web()
    post_report(stack, report_body("hn-ba-dinh-ngoc-ha"))
    wait_for(lambda: stack.sms_sent(to="+84901000101"), 60, "the approver's SMS prompt")
    stack.stop_worker(sig=signal.SIGTERM)
    # Only the log can show this: aiohttp reports an unclosed session as a warning on the
    # worker's stderr when the process exits, and leaves no trace in Redis, /metrics or the API.
    log = (stack.root / "worker-w1.log").read_text()
    assert "Unclosed client session" not in log
    assert "did not close cleanly" not in log


def test_a_cli_report_the_broker_drops_after_connecting_is_kept_and_said_so(
        make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """`loa report` connected to the broker, which then went away before it took the
    report: the report is in the outbox already, so the command succeeds and says it is
    kept (it had failed, and a retry filed the report again, under a new id)."""
    stack = make_stack()
    token = stack.token("desk", "reporter", area="hn-tay-ho")
    connect = Producer.start

    async def connect_then_lose_the_broker(producer: Producer) -> None:
        await connect(producer)
        stack.broker.stop()  # a real broker gone, at the moment that matters

    monkeypatch.setattr(Producer, "start", connect_then_lose_the_broker)
    done = CliRunner().invoke(cli_app, [
        "report", "--token", token, "--kind", "flood", "--severity", "severe", "--area",
        "hn-tay-ho", "--title", "Ngập đường Lạc Long Quân", "--id", "cli-kept-1"],
        env={k: v for k, v in stack.env.items() if k.startswith("LOA_")})
    assert done.exit_code == 0, done.output
    assert "report t.desk:cli-kept-1 accepted" in done.stdout
    assert "it is kept, and a worker sends it once the broker is back" in " ".join(
        done.stderr.split())  # (rich wraps the line)
    assert stack.redis.hexists(stack.keys.outbox(), "t.desk:cli-kept-1")


def test_each_process_refuses_config_it_cannot_load_naming_the_line(
        make_stack: MakeStack, tmp_path: Any) -> None:
    """An absence without its UTC offset: `loa web`, `loa worker` and `loa scheduler` each
    exit 1 saying where it is, with no traceback."""
    config = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", config)
    departments = config / "departments.yaml"
    departments.write_text(departments.read_text(encoding="utf-8").replace(
        '{from: "2026-12-22T00:00:00+07:00"', "{from: 2026-12-22"), "utf-8")
    stack = make_stack(LOA_CONFIG_DIR=str(config))
    for process in ("web", "worker", "scheduler"):
        done = stack.cli(process)
        assert done.returncode == 1, (process, done.stderr)
        assert "Traceback" not in done.stderr, (process, done.stderr)
        assert f"{departments}:69: departments[1].approvers[0].absent[0].from: Input should " \
               "have timezone info" in " ".join(done.stderr.split()), (process, done.stderr)
