"""The SMS or email that carries a prompt to someone who prefers that channel.

An email carries the draft in full, the deadline, and a signed link to a page
that asks for confirmation before anything is decided."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape

from coordinator.approvals.links import LinkClaims, sign_link
from coordinator.events import ApprovalPrompt, DeliveryRequest
from coordinator.runtime import Runtime

_emails = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "web" / "templates"),
    autoescape=select_autoescape(["html"]))


def decision_link(rt: Runtime, prompt: ApprovalPrompt) -> str | None:
    """A signed, expiring, single-use link for this person and request (None without a
    configured secret)."""
    secret = rt.settings.link_secret
    if secret is None:
        return None
    expires = prompt.deadline or (prompt.at + timedelta(days=1))
    token = sign_link(secret.get_secret_value(),
                      LinkClaims(prompt.approval_id, prompt.person_id, prompt.id, expires))
    return f"{rt.settings.web_url()}/decide/{token}"


async def prompt_delivery(rt: Runtime, prompt: ApprovalPrompt) -> DeliveryRequest | None:
    """The delivery for a prompt on the person's preferred channel (None for the web)."""
    delivery_id = f"prompt:{prompt.id}"
    if prompt.channel == "sms":
        return DeliveryRequest(id=delivery_id, channel="sms", recipient=prompt.phone,
                               text=prompt.text, incident_id=prompt.incident_id)
    if prompt.channel != "email":
        return None
    texts = await _draft_texts(rt, prompt.approval_id)
    link = decision_link(rt, prompt)
    deadline = (prompt.deadline.astimezone(ZoneInfo(rt.settings.timezone))
                .strftime("%H:%M %d/%m/%Y") if prompt.deadline else "")
    heading = f"[Loa] {prompt.approval_id} · {prompt.incident_id}"
    edit = f"{rt.settings.web_url()}/inbox/{prompt.approval_id}"
    text = "\n\n".join([prompt.text, *(f"{t['title']}\n{t['body']}" for t in texts),
                        f"Hạn / Deadline: {deadline}" if deadline else "",
                        f"Xem và phê duyệt / Review and decide: {link}" if link else
                        f"loa approve {prompt.approval_id} --as {prompt.person_id}",
                        f"Sửa rồi phê duyệt (cần đăng nhập) / Edit and approve (log in): {edit}"])
    html = _emails.get_template("email/prompt.html").render(
        heading=heading, prompt=prompt, texts=texts, link=link, deadline=deadline,
        edit=edit)
    subject = f"{heading}: {texts[0]['title']}" if texts else heading
    return DeliveryRequest(id=delivery_id, channel="email", recipient=prompt.email,
                           subject=subject, text=text, html=html,
                           incident_id=prompt.incident_id)


async def _draft_texts(rt: Runtime, approval_id: str) -> list[dict[str, str]]:
    raw = await rt.redis.hget(rt.keys.approval(approval_id), "request")
    draft_id = json.loads(raw)["draft_id"] if raw else None
    draft = await rt.redis.get(rt.keys.draft(draft_id)) if draft_id else None
    if draft is None:
        return []
    return [t for t in json.loads(draft)["texts"] if t["channel"] == "web"]
