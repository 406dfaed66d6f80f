"""The long-running processes: `loa worker`, `loa web` and `loa scheduler` (`loa up` starts
one of each; each may run alone against a real Kafka and Redis)."""

from __future__ import annotations

from coordinator.cli.common import env_settings, fail
from coordinator.errors import LoaError


def worker() -> None:
    """Run the pipeline's agents (scale out by running more, against a real Kafka and Redis)."""
    from coordinator.worker import run_worker

    try:
        run_worker(env_settings())
    except LoaError as exc:  # e.g. no LOA_SECRET_KEY to sign the audit checkpoints with
        raise fail(str(exc)) from exc


def web() -> None:
    """Serve the HTTP API and the public pages."""
    import uvicorn

    from coordinator.migrations.startup import check_layout_at_start
    from coordinator.observability import configure_logging
    from coordinator.runtime import settle_heap
    from coordinator.web.app import create_web_app

    settings = env_settings()
    configure_logging(settings.log_level, settings.log_format)
    check_layout_at_start(settings, "web")
    # proxy_headers=False: the client address comes from LOA_TRUSTED_PROXIES alone.
    # A stop waits 5 s for requests, not for live pages' streams (they reconnect).
    try:
        app = create_web_app(settings)
    except LoaError as exc:  # e.g. config/ that does not load: said plainly, as the worker
        raise fail(str(exc)) from exc
    settle_heap()
    uvicorn.run(app, host=settings.web_host, port=settings.web_port,
                log_level="warning", proxy_headers=False, loop="uvloop", http="httptools",
                timeout_graceful_shutdown=5)


def scheduler() -> None:
    """Fire escalation timers on time, in a process of their own (workers fire them too)."""
    from coordinator.scheduler import run_scheduler

    try:
        run_scheduler(env_settings())
    except LoaError as exc:  # e.g. no LOA_REDIS_URL, a broken TLS setting, a bad playbook
        raise fail(str(exc)) from exc
