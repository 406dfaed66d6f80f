"""The messages that tell people about an approval request. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from coordinator.approvals.record import ApprovalRecord
from coordinator.city import Person
from coordinator.events import ApprovalPrompt, PromptKind

_TEXT: dict[str, str] = {
    "request": "[Loa] Cần phê duyệt {id} ({incident}), hạn {deadline}. "
               "Trả lời YES {code} hoặc NO {code} <lý do>. / Approval needed by {deadline}: "
               "reply YES {code} or NO {code} <reason>.",
    "reminder": "[Loa] Nhắc: {id} ({incident}) chờ anh/chị phê duyệt, hạn {deadline}. "
                "Trả lời YES {code} hoặc NO {code} <lý do>. / Reminder: due {deadline}.",
    "moved_up": "[Loa] {id} ({incident}) đã chuyển lên cấp {level} do quá hạn; anh/chị vẫn "
                "có thể trả lời YES {code} / NO {code}. / Moved up to level {level}; you may "
                "still answer.",
    "hold_alert": "[Loa] {id} ({incident}): hết chuỗi phê duyệt, thông báo đang bị giữ chờ "
                  "quyết định. / Approval chain exhausted: statement held, decision needed.",
    "sign_off": "[Loa] {id} ({incident}): hết chuỗi phê duyệt; trực ban có thể tự phê duyệt "
                "(loa approve {id} --as <id>). / Chain exhausted: the duty officer may sign off.",
    "decided": "[Loa] {id} ({incident}) đã được quyết định. / {id} has been decided.",
}


def prompt_text(kind: PromptKind, record: ApprovalRecord, tz: str) -> str:
    """The short text of a prompt (SMS-sized), in Vietnamese then English."""
    request = record.request
    deadline = (record.due.astimezone(ZoneInfo(tz)).strftime("%H:%M %d/%m")
                if record.due else "-")
    return _TEXT[kind].format(id=request.id, incident=request.incident_id, deadline=deadline,
                              code=request.reply_code, level=record.level)


def prompts_for(kind: PromptKind, record: ApprovalRecord, person_ids: Iterable[str],
                people: Mapping[str, Person], now: datetime, tz: str, serial: int = 0
                ) -> list[ApprovalPrompt]:
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
            reply_code=record.request.reply_code, text=prompt_text(kind, record, tz), at=now,
        ))
    return out
