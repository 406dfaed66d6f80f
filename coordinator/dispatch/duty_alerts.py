"""Tell the duty officers something that needs them now (a surge, a promised update due):
an SMS or email to each who prefers one; the console's board shows it to all. Their
supervisors, who do not watch the board, are reached by SMS (else email) whatever they
prefer.

The messages are kept (``keep_deliveries``) in the same transaction that records what they
tell, so an alert recorded is an alert sent, even if the broker or the worker goes down
in between: the worker's recovery sends what is kept and not finished."""

from __future__ import annotations

from coordinator.city import City, Person
from coordinator.events import DeliveryRequest


def duty_officer_alerts(city: City, alert_id: str, text: str, incident_id: str | None = None
                        ) -> list[DeliveryRequest]:
    """`text` to each duty officer whose preferred channel is SMS or email. The delivery ids
    derive from `alert_id`: telling again sends nothing new. Pure."""
    return [request for person in city.duty_officers.values()
            if person.preferred_channel != "web"
            for request in _to(person, person.preferred_channel, alert_id, text, incident_id)]


def supervisor_alerts(city: City, alert_id: str, text: str, incident_id: str | None = None
                      ) -> list[DeliveryRequest]:
    """`text` to each duty supervisor: by SMS, or by email without a phone. Pure."""
    return [request for person in city.duty_supervisors.values()
            for request in _to(person, "sms" if person.phone else "email", alert_id, text,
                               incident_id)]


def _to(person: Person, channel: str, alert_id: str, text: str, incident_id: str | None
        ) -> list[DeliveryRequest]:
    recipient = {"sms": person.phone, "email": person.email}.get(channel, "")
    if not recipient:
        return []
    return [DeliveryRequest(
        id=f"alert-{alert_id}-{person.id}-{channel}", channel=channel,  # type: ignore[arg-type]
        recipient=recipient, text=text, subject=text.split(" / ")[0][:150],
        purpose="alert", incident_id=incident_id, person_id=person.id)]
