"""The web inbox: where prompts wait for a person (`loa inbox --as ID`, later the web UI)."""

from __future__ import annotations

from coordinator.events import ApprovalPrompt, AuditEvent
from coordinator.runtime import Runtime
from coordinator.state import Pipeline, queue_audit, transact


async def deliver_to_inbox(rt: Runtime, prompt: ApprovalPrompt) -> bool:
    """Put a prompt in its person's inbox once; True when this call delivered it."""
    key = rt.keys.inbox(prompt.person_id)

    async def body(pipe: Pipeline) -> bool:
        if await pipe.hexists(key, prompt.id):
            return False
        pipe.multi()
        pipe.hset(key, prompt.id, prompt.model_dump_json())
        queue_audit(pipe, rt.keys, AuditEvent(
            at=prompt.at, actor="loa", action="prompt.delivered", interface="web",
            incident_id=prompt.incident_id, subject=prompt.approval_id,
            detail={"kind": prompt.kind, "to": prompt.person_id, "level": prompt.level,
                    "preferred_channel": prompt.channel, "channel": "web"}))
        return True

    return await transact(rt.redis, [key], body)

