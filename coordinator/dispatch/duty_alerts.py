"""Tell the duty officers something that needs them now (a surge, a promised update due):
an SMS or email to each who prefers one; the console's board shows it to all."""

from __future__ import annotations

from coordinator.city import City
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
        channel = person.preferred_channel
        recipient = {"sms": person.phone, "email": person.email}.get(channel, "")
        if channel == "web" or not recipient:
            continue
        await queue_delivery(redis, keys, DeliveryRequest(
            id=f"alert-{alert_id}-{person.id}-{channel}", channel=channel,
            recipient=recipient, text=text, subject=text.split(" / ")[0][:150],
            purpose="alert", incident_id=incident_id, person_id=person.id), send)
        queued += 1
    return queued
