"""The SMS or email that carries a prompt to someone who prefers that channel.

An SMS that asks for an answer carries the draft's SMS text (the words a YES publishes),
the approver's own reply code, and, when the draft is too long to quote, a short link to a
signed page showing it whole. An email carries the draft in full, the deadline, and a
signed link to a page that asks for confirmation before anything is decided."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape

from coordinator import observability as obs
from coordinator.approvals.chain import reply_code
from coordinator.approvals.links import LinkClaims, sign_link
from coordinator.approvals.prompts import (
    ANSWERABLE,
    draft_sms,
    fits_budget,
    sms_prompt_text,
    unseen_in_sms,
)
from coordinator.errors import ConfigError
from coordinator.events import ApprovalPrompt, DeliveryRequest, Draft, utcnow
from coordinator.runtime import Runtime
from coordinator.signing import b64, derived_key
from coordinator.state import Script

_emails = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=select_autoescape(["html"]))
log = obs.get_logger("prompts")


def decision_link(rt: Runtime, prompt: ApprovalPrompt) -> str | None:
    """A signed, expiring, single-use link for this person and request (None without a
    configured secret)."""
    token = _link_token(rt, prompt)
    return f"{rt.settings.web_url()}/decide/{token}" if token else None


def _link_token(rt: Runtime, prompt: ApprovalPrompt) -> str | None:
    secret = rt.settings.link_secret
    if secret is None:
        return None
    return sign_link(secret.get_secret_value(),
                     LinkClaims(prompt.approval_id, prompt.person_id, prompt.id,
                                _expiry(prompt)))


def _expiry(prompt: ApprovalPrompt) -> datetime:
    return prompt.deadline or (prompt.at + timedelta(days=1))


async def short_decision_link(rt: Runtime, prompt: ApprovalPrompt) -> str:
    """`/d/<id>`: an SMS-sized stand-in for the signed decision link, kept in Redis until
    the link expires (the id is keyed on the prompt, so a resent prompt reuses it); the
    person's inbox page when links are not enabled."""
    token = _link_token(rt, prompt)
    secret = rt.settings.link_secret
    if token is None or secret is None:
        return f"{rt.settings.web_url()}/inbox/{prompt.approval_id}"
    key = derived_key(secret.get_secret_value(), "short-link")
    short_id = b64(hmac.new(key, prompt.id.encode(), hashlib.sha256).digest())[:16]
    ttl = max(int((_expiry(prompt) - utcnow()).total_seconds()), 60)
    await rt.redis.set(rt.keys.short_link(short_id), token, ex=ttl)
    return f"{rt.settings.web_url()}/d/{short_id}"


async def sms_for(rt: Runtime, prompt: ApprovalPrompt, draft: Draft | None = None) -> str:
    """The SMS text of a prompt: for one that asks for an answer, the draft's SMS text and
    the person's own reply code (no code, and a link instead, without LOA_SECRET_KEY).
    `draft`: the request's, when the caller has it (else it is read)."""
    if prompt.kind not in ANSWERABLE:
        return prompt.text
    draft = draft or await _draft(rt, prompt.approval_id)
    # approvers read the first staff language (config/ has no per-person language yet)
    sms = draft_sms(draft.texts, rt.city.languages.staff[0]) if draft else None
    try:
        code: str | None = reply_code(rt.settings.key_for("reply-code"), prompt.approval_id,
                                      prompt.person_id)
    except ConfigError as exc:
        log.warning("SMS prompt without a reply code", prompt=prompt.id, why=str(exc))
        code = None
    if draft is not None and unseen_in_sms(draft):
        code = None  # what it publishes is not all in the SMS: decided by the link, read whole
    needs_link = sms is None or not fits_budget(sms) or code is None
    link = await short_decision_link(rt, prompt) if needs_link else ""
    return sms_prompt_text(prompt.kind, prompt.text, sms, code, link)


async def prompt_delivery(rt: Runtime, prompt: ApprovalPrompt, draft: Draft | None = None
                          ) -> DeliveryRequest | None:
    """The delivery for a prompt on the person's preferred channel (None for the web).
    `draft`: the request's, when the caller has it (the planner just wrote it); else read."""
    delivery_id = f"prompt:{prompt.id}"
    # Every prompt but the news that it was decided is about a pending approval.
    answer_for = prompt.approval_id if prompt.kind != "decided" else None
    if prompt.channel == "sms":
        return DeliveryRequest(id=delivery_id, channel="sms", recipient=prompt.phone,
                               text=await sms_for(rt, prompt, draft),
                               incident_id=prompt.incident_id, person_id=prompt.person_id,
                               answer_for=answer_for)
    if prompt.channel != "email":
        return None
    draft = draft or await _draft(rt, prompt.approval_id)
    texts = [t.model_dump() for t in draft.texts if t.channel == "web"] if draft else []
    link = decision_link(rt, prompt)
    deadline = (prompt.deadline.astimezone(ZoneInfo(rt.settings.timezone))
                .strftime("%H:%M %d/%m/%Y") if prompt.deadline else "")
    heading = f"[Loa] {prompt.approval_id} · {prompt.incident_id}"
    edit = f"{rt.settings.web_url()}/inbox/{prompt.approval_id}"
    text = "\n\n".join([prompt.text, *(f"{t['title']}\n{t['body']}" for t in texts),
                        f"Hạn / Deadline: {deadline}" if deadline else "",
                        f"Xem và phê duyệt / Review and decide: {link}" if link else
                        f"Xem và phê duyệt (cần đăng nhập) / Review and decide (log in): {edit}",
                        f"Sửa rồi phê duyệt (cần đăng nhập) / Edit and approve (log in): {edit}"])
    staff = rt.city.languages.staff  # the prompt's own words are in the staff languages
    html = _emails.get_template("prompt_email.html").render(
        heading=heading, prompt=prompt, texts=texts, link=link, deadline=deadline,
        edit=edit, lang=staff[0])
    subject = f"{heading}: {texts[0]['title']}" if texts else heading
    return DeliveryRequest(id=delivery_id, channel="email", recipient=prompt.email,
                           subject=subject, text=text, html=html, language=", ".join(staff),
                           incident_id=prompt.incident_id, person_id=prompt.person_id,
                           answer_for=answer_for)


# KEYS: the approval; ARGV: the drafts' key prefix. The draft its request is for, or nil.
_DRAFT_OF = Script("""
local raw = redis.call('HGET', KEYS[1], 'request')
if not raw then return false end
return redis.call('GET', ARGV[1] .. cjson.decode(raw)['draft_id'])
""")


async def _draft(rt: Runtime, approval_id: str) -> Draft | None:
    """The draft an approval request is for (one round trip)."""
    draft = await _DRAFT_OF(rt.redis, [rt.keys.approval(approval_id)], [rt.keys.draft("")])
    return Draft.model_validate_json(draft) if draft else None
