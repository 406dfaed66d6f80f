"""`loa worker`: run the faust agents of the pipeline."""

from __future__ import annotations

import asyncio

import uvloop
from prometheus_client import start_http_server
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coordinator import observability as obs
from coordinator.broker import ensure_topics
from coordinator.keys import Keys
from coordinator.migrations.startup import check_layout_at_start
from coordinator.runtime import build_runtime, schedule_as_batch, settle_heap
from coordinator.settings import Settings
from coordinator.state import run_with_redis


def run_worker(settings: Settings) -> None:
    """Start the worker and block until it stops (SIGTERM/SIGINT)."""
    from faust import Worker

    from coordinator.app import create_app

    obs.configure_logging(settings.log_level, settings.log_format)
    # Before any thread starts: each gets the policy of the thread that starts it.
    if settings.worker_cpu_policy == "batch":
        try:
            schedule_as_batch()  # (False, no such policy: not Linux, nothing to say)
        except OSError as exc:
            obs.get_logger("worker").warning(
                "the OS refused to schedule this worker as batch work "
                "(LOA_WORKER_CPU_POLICY); it runs as usual", error=repr(exc))
    # uvloop for the worker's loop and faust's consumer thread (which makes its own loop)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    check_layout_at_start(settings, "worker")
    refuse_a_twin(settings)
    rt = build_runtime(settings)
    created = asyncio.run(ensure_topics(settings))
    if created:
        obs.get_logger("worker").info("topics created", topics=created)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr="127.0.0.1")
    app = create_app(settings, rt)
    worker = Worker(app, loglevel="WARNING", quiet=True)
    # faust's terminal spinner turns on every log record, so it sets the root logger to DEBUG:
    # every debug line of aiokafka, faust and APScheduler was then built and handled, about a
    # tenth of the worker's CPU under load. A service has no use for a spinner.
    worker.spinner = None
    settle_heap()
    worker.execute_from_commandline()


def refuse_a_twin(settings: Settings) -> None:
    """Exit (SystemExit, with the reason) while another live process runs as this worker
    id (`LOA_WORKER_ID`): see ``periodic.twin_alive``. When Redis does not answer, go on
    (the worker retries Redis as it always has)."""
    from coordinator.periodic import twin_alive

    if not settings.redis_url:
        return
    key = Keys(settings.redis_prefix).worker_heartbeat(settings.worker_id)
    try:
        twin = run_with_redis(settings.redis_url, lambda redis: twin_alive(redis, key))
    except (OSError, RedisConnectionError, RedisTimeoutError):
        return
    if twin:
        raise SystemExit(
            f"loa worker: another worker is running as {settings.worker_id!r} (its heartbeat "
            f"{key} was renewed while this one waited): give each worker its own "
            "LOA_WORKER_ID")
