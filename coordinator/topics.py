"""Every Kafka topic, what its values are, and how it is keyed.

The audit trail is no topic: it is the Redis stream `Keys.audit()`, written in the same
transaction as the change it records (state.queue_audit)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    """A topic's base name, what its key and value are, and whether it carries volume: a
    busy topic gets `LOA_TOPIC_PARTITIONS` partitions (the workers share it), a quiet one a
    single partition. Every partition is asked for records every `LOA_BROKER_FETCH_WAIT_MS`,
    busy or not, which costs the broker and the worker CPU at rest."""

    name: str
    value: str
    key: str
    busy: bool = False

    def partitions(self, busy_partitions: int) -> int:
        """The partitions this topic is created with. Pure."""
        return busy_partitions if self.busy else 1


REPORTS = TopicSpec("reports", "events.Report", "kind:area, so related reports stay in order",
                    busy=True)
INCIDENT_EVENTS = TopicSpec("incident-events", "events.IncidentEvent", "incident id")
APPROVAL_EVENTS = TopicSpec("approval-events", "events.ApprovalEvent", "incident id")
DECISIONS = TopicSpec("decisions", "events.Decision", "approval id")
STATEMENTS = TopicSpec("statements", "events.Statement", "incident id")
DELIVERIES_SMS = TopicSpec("deliveries.sms", "events.DeliveryRequest", "delivery id")
DELIVERIES_EMAIL = TopicSpec("deliveries.email", "events.DeliveryRequest", "delivery id")
# A statement's deliveries, a batch an event: their own lane, so a prompt or a code on
# `deliveries.*` never waits behind a city-wide fan-out.
DISPATCH_SMS = TopicSpec("dispatch.sms", "events.DeliveryBatch", "statement id:batch",
                         busy=True)
DISPATCH_EMAIL = TopicSpec("dispatch.email", "events.DeliveryBatch", "statement id:batch",
                           busy=True)
DEAD_LETTERS = TopicSpec("dead-letters", "events.DeadLetter", "the original key")

ALL = (REPORTS, INCIDENT_EVENTS, APPROVAL_EVENTS, DECISIONS, STATEMENTS, DELIVERIES_SMS,
       DELIVERIES_EMAIL, DISPATCH_SMS, DISPATCH_EMAIL, DEAD_LETTERS)


def topic_name(spec: TopicSpec, prefix: str) -> str:
    """The topic's name on the broker, with the deployment's prefix."""
    return f"{prefix}{spec.name}"


def spec_named(name: str) -> TopicSpec:
    """The topic of a base name; raises KeyError for none."""
    return {spec.name: spec for spec in ALL}[name]
