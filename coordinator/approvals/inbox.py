"""The web inbox: where prompts wait for a person, and the requests they hold a reply code
for (where an SMS answer's code is looked for)."""

from __future__ import annotations

from collections.abc import Callable

from coordinator.approvals.prompts import ANSWERABLE
from coordinator.events import ApprovalPrompt, AuditEvent
from coordinator.keys import Keys
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, Redis, queue_audit, set_if_new

# An SMS answer's code is checked against this many of the person's newest requests.
PROMPTED_KEPT = 50


async def deliver_to_inbox(rt: Runtime, prompt: ApprovalPrompt,
                           also: Callable[[Pipeline], None] | None = None) -> bool:
    """Put a prompt in its person's inbox once; True when this call delivered it. The
    writes `also` queues are made with it, whether or not it was there already."""

    def fill(pipe: Pipeline) -> None:
        if prompt.kind in ANSWERABLE:
            prompted = rt.keys.prompted(prompt.person_id)
            pipe.zadd(prompted, {prompt.approval_id: prompt.at.timestamp()}, nx=True)
            pipe.zremrangebyrank(prompted, 0, -PROMPTED_KEPT - 1)
        queue_audit(pipe, rt.keys, AuditEvent(
            at=prompt.at, actor="loa", action="prompt.delivered", interface="web",
            incident_id=prompt.incident_id, subject=prompt.approval_id,
            detail={"kind": prompt.kind, "to": prompt.person_id, "level": prompt.level,
                    "preferred_channel": prompt.channel, "channel": "web"}))

    return await set_if_new(rt.redis, rt.keys.inbox(prompt.person_id), prompt.id,
                            prompt.model_dump_json(), fill, also)


async def prompted_requests(redis: Redis, keys: Keys, person_id: str) -> list[str]:
    """The requests a person was given a reply code for, newest first."""
    found: list[str] = await redis.zrevrange(keys.prompted(person_id), 0, PROMPTED_KEPT - 1)
    return found
