"""The messages that tell people about an approval request. Pure.

A prompt (the event, the inbox entry, the email's first line) carries no reply code: the
SMS built by :func:`sms_prompt_text` adds the person's own code, with the draft's SMS text
(the words a YES publishes), when it is sent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from channels.segments import segment_count
from coordinator.city import Person
from coordinator.events import ApprovalPrompt, Draft, PromptKind, RenderedText
from coordinator.model.approval import ApprovalRecord

# The kinds whose SMS asks for an answer, and so carries the draft and a reply code.
ANSWERABLE: frozenset[PromptKind] = frozenset({"request", "reminder", "moved_up"})
# A draft whose SMS has no budget of its own is held to the playbooks' default.
DEFAULT_SEGMENT_BUDGET = 2
# How much of an over-budget draft an SMS prompt quotes before the link to the whole.
EXCERPT_CHARS = 100

_TEXT: dict[str, str] = {
    "request": "[Loa] Cần phê duyệt {id} ({incident}), hạn {deadline}. / Approval needed "
               "for {id} by {deadline}.",
    "reminder": "[Loa] Nhắc: {id} ({incident}) chờ anh/chị phê duyệt, hạn {deadline}. / "
                "Reminder: {id} is due {deadline}.",
    "moved_up": "[Loa] {id} ({incident}) đã chuyển lên cấp {level} do quá hạn; anh/chị vẫn "
                "có thể trả lời. / Moved up to level {level}; you may still answer.",
    "hold_alert": "[Loa] {id} ({incident}): hết chuỗi phê duyệt, thông báo đang bị giữ chờ "
                  "quyết định. / Approval chain exhausted: statement held, decision needed.",
    "sign_off": "[Loa] {id} ({incident}): hết chuỗi phê duyệt; trực ban có thể tự phê duyệt "
                "tại {inbox} / Chain exhausted: the duty officer may sign off at {inbox}",
    "decided": "[Loa] {id} ({incident}) đã được quyết định. / {id} has been decided.",
}
_ANSWER = ("Trả lời YES {code} để duyệt, NO {code} <lý do> để từ chối. / Reply YES {code} "
           "to approve, NO {code} <reason> to reject.")
_ANSWER_ONLINE = "Trả lời tại / Answer at: {link}"
_WHOLE = "Toàn văn / Full text: {link}"


def prompt_text(kind: PromptKind, record: ApprovalRecord, tz: str, base_url: str = "") -> str:
    """The short text of a prompt, in Vietnamese then English (no reply code)."""
    request = record.request
    deadline = (record.due.astimezone(ZoneInfo(tz)).strftime("%H:%M %d/%m")
                if record.due else "-")
    return _TEXT[kind].format(id=request.id, incident=request.incident_id, deadline=deadline,
                              level=record.level, inbox=f"{base_url}/inbox/{request.id}")


def fits_budget(draft: RenderedText) -> bool:
    """Whether a draft's SMS text is within its playbook's segment budget."""
    budget = draft.segment_budget or DEFAULT_SEGMENT_BUDGET
    return segment_count(draft.body) <= budget


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of `text`, cut at a word boundary within `limit` characters, with `…`."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,.;:") + "…"


def sms_prompt_text(kind: PromptKind, text: str, draft: RenderedText | None,
                    code: str | None, link: str) -> str:
    """The SMS of a prompt: its text; for a prompt that asks for an answer, the draft's SMS
    in full when it fits the playbook's budget (else its start and `link` to the whole), and
    how to answer with `code` (or at `link` when there is no code)."""
    if kind not in ANSWERABLE:
        return text
    lines = [text]
    if draft is None:
        lines.append(_WHOLE.format(link=link))
    elif fits_budget(draft):
        lines.append(f"«{' '.join(draft.body.split())}»")
    else:
        lines += [f"«{excerpt(draft.body)}»", _WHOLE.format(link=link)]
    lines.append(_ANSWER.format(code=code) if code else _ANSWER_ONLINE.format(link=link))
    return "\n".join(lines)


def unseen_in_sms(draft: Draft) -> str | None:
    """What an approval of `draft` would publish that its SMS prompt cannot show, or None:
    a translator's texts in other languages and channels, or the links a correction names
    as where the claim spread. Such a draft is decided where all of it is read. Pure."""
    if draft.note == "translation":
        return "a translation"
    if draft.spreading:
        return "a correction naming where the claim spread"
    return None


def draft_sms(texts: Iterable[RenderedText], language: str) -> RenderedText | None:
    """The draft's SMS text in `language`, else its first SMS text, else None."""
    sms = [t for t in texts if t.channel == "sms"]
    return next((t for t in sms if t.language == language), sms[0] if sms else None)


def prompts_for(kind: PromptKind, record: ApprovalRecord, person_ids: Iterable[str],
                people: Mapping[str, Person], now: datetime, tz: str, serial: int = 0,
                base_url: str = "") -> list[ApprovalPrompt]:
    """One prompt per person; ids are deterministic, so sending twice delivers once."""
    out = []
    for person_id in dict.fromkeys(person_ids):
        person = people.get(person_id)
        if person is None:
            continue
        out.append(ApprovalPrompt(
            id=f"{record.request.id}:{kind}:{record.level}:{serial}:{person_id}", kind=kind,
            approval_id=record.request.id, incident_id=record.request.incident_id,
            level=record.level, person_id=person_id, person_name=person.name,
            channel=person.preferred_channel, phone=person.phone, email=person.email,
            deadline=record.due if record.phase == "level" else None,
            text=prompt_text(kind, record, tz, base_url), at=now,
        ))
    return out
