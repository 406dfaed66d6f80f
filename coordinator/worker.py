"""`loa worker`: run the faust agents of the pipeline."""

from __future__ import annotations

import asyncio

import uvloop
from prometheus_client import start_http_server

from coordinator import observability as obs
from coordinator.broker import ensure_topics
from coordinator.migrations.startup import check_layout_at_start
from coordinator.runtime import build_runtime, settle_heap
from coordinator.settings import Settings


def run_worker(settings: Settings) -> None:
    """Start the worker and block until it stops (SIGTERM/SIGINT)."""
    from faust import Worker

    from coordinator.app import create_app

    obs.configure_logging(settings.log_level, settings.log_format)
    # uvloop for the worker's loop and faust's consumer thread (which makes its own loop)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    check_layout_at_start(settings, "worker")
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

