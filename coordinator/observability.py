"""Structured logs (structlog) and Prometheus metrics, configured once per process."""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import Counter, Gauge, Histogram

REPORTS_ACCEPTED = Counter("loa_reports_accepted_total",
                           "Reports accepted (outboxed and on the broker)", ["interface"])
REPORTS_TAKEN_IN = Counter("loa_reports_taken_in_total", "Reports taken in by the intake",
                           ["outcome"])
INCIDENTS_OPENED = Counter("loa_incidents_opened_total", "Incidents opened (drills apart)",
                           ["exercise"])
APPROVALS_REQUESTED = Counter("loa_approvals_requested_total", "Approval requests created")
WEB_REFUSED = Counter("loa_web_refused_total",
                      "Requests refused with 503: more were in flight than admitted")
DECISIONS = Counter("loa_decisions_total", "Decisions applied", ["outcome"])
STATEMENTS_PUBLISHED = Counter("loa_statements_published_total",
                               "Statements published (drills apart)", ["exercise"])
DEAD_LETTERS = Counter("loa_dead_letters_total", "Messages sent to dead-letters", ["topic"])
OUTBOX_RESENT = Counter("loa_outbox_resent_total", "Outboxed reports put on the broker again")
ESCALATION_LATENESS = Histogram(
    "loa_escalation_lateness_seconds", "From a level's deadline to its escalation committed",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
)
_HOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
HOP_WAIT = Histogram(
    "loa_hop_wait_seconds",
    "From an event's production (its broker timestamp) to its handler starting, per topic",
    ["topic"], buckets=_HOP_BUCKETS,
)
HANDLER_TIME = Histogram(
    "loa_handler_seconds", "A handler's own time for one event, per topic (retries included)",
    ["topic"], buckets=_HOP_BUCKETS,
)
REPORT_ACCEPT = Histogram(
    "loa_report_accept_seconds",
    "POST /api/reports admitted by the web process (any answer: 202, or a refusal such as "
    "422; not the 503 of a full process): from its outermost middleware taking the request "
    "to the answer handed to the HTTP server (the rest of a client's wait is outside: "
    "sockets, the server's parsing, a busy CPU)", buckets=_HOP_BUCKETS,
)
FETCH_WAIT = Gauge(
    "loa_fetch_wait_seconds",
    "How long the worker's next fetch may wait at the broker: short while records flow or "
    "an approval awaits an approver, longer when idle")
STAGE_LATENCY = Histogram(
    "loa_stage_latency_seconds", "Time from the triggering event to the end of a stage",
    ["stage"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Route stdlib and structlog output through one renderer."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger bound to a component name."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(component=name)
    return logger
