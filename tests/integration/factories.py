"""Factories and waiting helpers shared by the integration tests: report bodies, filing a
report over the API, and waiting for what the worker makes of it (incident, approval
request, timeline entries). Every helper talks to a running `Stack`; none mocks it."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaProducer

from coordinator.broker import bootstrap_servers
from tests.integration.smtp_server import Inbox
from tests.integration.stack import Stack, wait_for


def report_body(area: str, kind: str = "flood", **extra: Any) -> dict[str, Any]:
    """A full, valid report body for POST /api/reports (severe, with details and reporter)
    and a unique title; `extra` adds or overrides fields."""
    return {"kind": kind, "severity": "severe", "area": area,
            "title": f"Ngập sâu {uuid.uuid4().hex[:6]}", "details": "Nước ngập 40 cm",
            "reporter": "UBND phường", **extra}


def flood_body(area: str, title: str = "Ngập sâu") -> dict[str, Any]:
    """The smallest valid report body: a severe flood in `area`, titled `title` plus a
    unique suffix."""
    return {"kind": "flood", "severity": "severe", "area": area,
            "title": f"{title} {uuid.uuid4().hex[:6]}"}


def post_report(stack: Stack, body: dict[str, Any], token: str | None = None) -> str:
    """POST a report with `token` (a duty officer's by default); its stored id."""
    with stack.http(token) as http:
        answer = http.post("/api/reports", json=body)
    assert answer.status_code == 202, answer.text
    report_id: str = answer.json()["id"]
    return report_id


def wait_for_incident(stack: Stack, report_id: str, timeout_s: float = 30) -> str:
    """The incident a report was taken into, waiting for the worker to take it in."""
    return wait_for(lambda: stack.incident_of(report_id), timeout_s,
                    f"{report_id} taken in")


def file_report(stack: Stack, body: dict[str, Any], token: str | None = None) -> str:
    """POST a report and wait until its incident awaits approval; the incident id."""
    incident_id = wait_for_incident(stack, post_report(stack, body, token))
    stack.wait_for_status(incident_id, "awaiting_approval")
    return incident_id


def wait_for_approval(stack: Stack, report_id: str) -> tuple[str, dict[str, Any]]:
    """(incident id, approval request as the API shows it) once the report's incident
    awaits approval."""
    incident_id = wait_for_incident(stack, report_id)
    stack.wait_for_status(incident_id, "awaiting_approval")
    with stack.http() as http:
        detail = http.get(f"/api/incidents/{incident_id}").json()
    approval: dict[str, Any] = detail["approval"]
    return incident_id, approval


def file_drill(stack: Stack, kind: str, area: str = "hn-ba-dinh",
               severity: str = "severe", title: str = "Diễn tập",
               token: str | None = None) -> tuple[str, str]:
    """File a drill report (with a duty officer's token unless `token`); (incident id,
    approval id) once the request exists."""
    report_id = post_report(stack, {"kind": kind, "severity": severity, "area": area,
                                    "title": f"{title} {uuid.uuid4().hex[:6]}"}, token)
    incident_id = wait_for(lambda: stack.incident_of(report_id), 30, "drill taken in")
    approval_id = wait_for(lambda: stack.incident(incident_id).get("approval_id"), 30,
                           "approval request")
    return incident_id, approval_id


def timeline_entries(stack: Stack, incident_id: str, action: str) -> list[dict[str, Any]]:
    """The entries of an incident's timeline with this `action`, in order."""
    return [e for e in stack.timeline(incident_id) if e["action"] == action]


def entry_time(entry: dict[str, Any]) -> datetime:
    """When a timeline entry was written."""
    return datetime.fromisoformat(entry["at"])


def audit_events(stack: Stack) -> list[dict[str, Any]]:
    """Every audit event the stack recorded, oldest first."""
    # the client decodes responses: ids and fields are str
    entries = cast(list[tuple[str, dict[str, str]]], stack.redis.xrange(stack.keys.audit()))
    return [json.loads(fields["event"]) for _, fields in entries]


# Rebuild the audit stream (KEYS[1]) with entry ARGV[1]'s event replaced by ARGV[2], in one
# step: what "changing an audit entry" takes in Redis, where stream entries cannot be edited
# in place, while the worker may go on writing. Returns how many entries there are.
REWRITE_AUDIT_ENTRY = """
local items = redis.call('XRANGE', KEYS[1], '-', '+')
redis.call('DEL', KEYS[1])
for _, item in ipairs(items) do
  local value = item[2][2]
  if item[1] == ARGV[1] then value = ARGV[2] end
  redis.call('XADD', KEYS[1], item[1], 'event', value)
end
return #items
"""


# --- residents and the messages they get ---------------------------------------------------

def new_phone() -> str:
    """A Vietnamese mobile number no other test uses."""
    return f"+8491{uuid.uuid4().int % 10**7:07d}"


def new_email() -> str:
    """An email address no other test uses."""
    return f"dan-{uuid.uuid4().hex[:8]}@mail.example"


def sms_code(stack: Stack, phone: str, count: int = 1) -> str:
    """The six-digit code in the `count`-th SMS to `phone` (waits for it)."""
    def arrived() -> list[dict[str, Any]]:
        messages = stack.sms_sent(to=phone)
        return messages if len(messages) >= count else []

    sent = wait_for(arrived, 30, f"SMS {count} to {phone}")
    found = re.search(r"\b(\d{6})\b", sent[count - 1]["body"])
    assert found, sent[count - 1]["body"]
    return found.group(1)


def mail_to(inbox: Inbox, address: str, count: int = 1) -> EmailMessage:
    """The `count`-th email to `address` (waits for it)."""
    def found() -> list[EmailMessage]:
        got = [m for m in inbox.messages if str(m["To"]).lower() == address.lower()]
        return got if len(got) >= count else []

    return wait_for(found, 30, f"email {count} to {address}")[count - 1]


def text_of(message: EmailMessage) -> str:
    """The plain-text body of an email."""
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def link_in(message: EmailMessage, path: str) -> str:
    """The first link in an email's text whose path starts with `path`."""
    found = re.search(rf"(http://\S+{re.escape(path)}\S+)", text_of(message))
    assert found, text_of(message)
    return found.group(1)


def import_residents(stack: Stack, folder: Path, phone_prefix: str, count: int, area: str,
                     email: bool = False) -> list[str]:
    """`count` residents of `area` on SMS (and email, with `email`), imported with
    `loa subscribers import`: phones `{phone_prefix}00000` on (national form); their E.164
    numbers."""
    phones = [f"{phone_prefix}{i:05d}" for i in range(count)]
    rows = ["phone,email,language,areas,topics,channels"] + [
        f"{p},{f'd{p}@dan.example' if email else ''},vi,{area},,{'sms;email' if email else 'sms'}"
        for p in phones]
    path = folder / f"residents-{phone_prefix}.csv"
    path.write_text("\n".join(rows), encoding="utf-8")
    imported = stack.subscribers("import", str(path), timeout_s=600)
    assert f"{count} saved" in imported.stdout, imported.stderr
    return [f"+84{p[1:]}" for p in phones]


def produce(stack: Stack, topic: str, key: str, value: bytes) -> None:
    """Put one event on a topic of the stack's broker, as a process of Loa would."""
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(stack.broker.url))
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def approve_a_flood(stack: Stack, area: str, title: str) -> tuple[str, str]:
    """File a severe flood report and approve its draft with `loa approve`:
    (incident id, the statement id it will publish)."""
    incident_id = file_report(stack, {"kind": "flood", "severity": "severe", "area": area,
                                      "title": title})
    assert stack.cli("approve", f"APR-{incident_id[4:]}-1",
                     *stack.as_person("nguyen-van-an")).returncode == 0
    return incident_id, f"STM-{incident_id[4:]}-1"


class FanOutReceived:
    """What the SMS endpoint and the SMTP server received of one statement's fan-out to the
    residents imported with one phone prefix (`import_residents`)."""

    def __init__(self, stack: Stack, inbox: Inbox, statement: str, phone_prefix: str) -> None:
        self.stack, self.inbox, self.statement = stack, inbox, statement
        self.number_prefix = f"+84{phone_prefix[1:]}"

    def sms(self) -> list[str]:
        """The residents' numbers, once per SMS (the whole outbox: slow to fetch when big)."""
        return [m["to"] for m in self.stack.sms_sent(timeout_s=120)
                if m["to"].startswith(self.number_prefix)]

    def emails(self) -> list[EmailMessage]:
        """The statement's emails, resends under the same Message-ID included."""
        return [m for m in list(self.inbox.messages) if self.statement in str(m["Message-ID"])]

    def email_ids(self) -> set[str]:
        """The statement's distinct email Message-IDs."""
        return {str(m["Message-ID"]) for m in self.emails()}

    def assert_each_once(self, n: int, resent_at_most: int, context: Any = None) -> int:
        """Every one of the `n` residents has exactly one SMS, and one email Message-ID.
        An email handed to SMTP when its worker died, but not yet recorded, may go again
        under the same Message-ID (SMTP cannot be asked what it got): at most
        `resent_at_most` such resends. Returns how many there were."""
        per_number = Counter(self.sms())
        assert len(per_number) == n and set(per_number.values()) == {1}, context
        emails = self.emails()
        assert len({str(m["Message-ID"]) for m in emails}) == n, context
        per_recipient = Counter(str(m["To"]) for m in emails)
        assert len(per_recipient) == n, context
        resent = sum(per_recipient.values()) - n
        assert resent <= resent_at_most, context
        return resent
