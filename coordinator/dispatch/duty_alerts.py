"""Tell the duty officers something that needs them now (a surge, a promised update due):
an SMS or email to each who prefers one; the console's board shows it to all. Their
supervisors, who do not watch the board, are reached by SMS (else email) whatever they
prefer."""

from __future__ import annotations

from coordinator.city import City, Person
from coordinator.dispatch.deliveries import Send, queue_delivery
from coordinator.events import DeliveryRequest
from coordinator.keys import Keys
from coordinator.state import Redis


async def tell_duty_officers(redis: Redis, keys: Keys, city: City, alert_id: str, text: str,
                             send: Send, incident_id: str | None = None) -> int:
    """Queue `text` to each duty officer whose preferred channel is SMS or email; returns how
    many. The delivery ids derive from `alert_id`: telling again sends nothing new."""
    queued = 0
    for person in city.duty_officers.values():
        if person.preferred_channel != "web":
            queued += await _tell(redis, keys, person, person.preferred_channel, alert_id,
                                  text, send, incident_id)
    return queued


async def tell_supervisors(redis: Redis, keys: Keys, city: City, alert_id: str, text: str,
                           send: Send, incident_id: str | None = None) -> list[str]:
    """Queue `text` to each duty supervisor: by SMS, or by email without a phone; the ids
    of those told."""
    told = []
    for person in city.duty_supervisors.values():
        if await _tell(redis, keys, person, "sms" if person.phone else "email", alert_id,
                       text, send, incident_id):
            told.append(person.id)
    return told


async def _tell(redis: Redis, keys: Keys, person: Person, channel: str, alert_id: str,
                text: str, send: Send, incident_id: str | None) -> int:
    recipient = {"sms": person.phone, "email": person.email}.get(channel, "")
    if not recipient:
        return 0
    await queue_delivery(redis, keys, DeliveryRequest(
        id=f"alert-{alert_id}-{person.id}-{channel}", channel=channel,  # type: ignore[arg-type]
        recipient=recipient, text=text, subject=text.split(" / ")[0][:150],
        purpose="alert", incident_id=incident_id, person_id=person.id), send)
    return 1
