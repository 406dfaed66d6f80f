"""Trust at every door, tried as an outsider would against a running Loa: the role table
for every route, strangers' words that never become public text, contacts and reply codes
that no stranger sees, revoked tokens, body and id limits."""

from __future__ import annotations

import getpass
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.access import POLICY, Role
from coordinator.web.auth import route_actions
from tests.conftest import PLAYBOOKS_DIR
from tests.integration.drills import drill_folders
from tests.integration.factories import file_report, flood_body, post_report
from tests.integration.smtp_server import Inbox
from tests.integration.stack import Stack, running, wait_for
from tests.web_routes import flat_routes, offline_web_app

pytestmark = pytest.mark.integration

SAMPLE_IDS = {"incident_id": "INC-00001", "statement_id": "STM-00001-1",
              "approval_id": "APR-00001-1", "token": "not-a-token", "tip_id": "TIP-000000000000",
              "report_id": "t.x:rep-000001", "code": "x"}
SUBSCRIBERS = """\
phone,email,language,areas,topics,channels,role
0912000001,,vi,hn-ba-dinh,,sms,resident
0912000002,dan.trust@mail.example,en,hn-ba-dinh-kim-ma,,sms;email,resident
"""
CONTACTS = ["+84912000001", "0912000001", "+84912000002", "0912000002",
            "dan.trust@mail.example"]


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory, mail: tuple[int, Inbox]
          ) -> Iterator[Stack]:
    """A running Loa with drill playbooks (1 s a level), the flood playbook, SMS to the
    sandbox and email to `mail`."""
    root = tmp_path_factory.mktemp("trust")
    playbooks, config = drill_folders(root, within_s=1)
    shutil.copy(PLAYBOOKS_DIR / "flood.yaml", playbooks)
    with running(root / "stack", sms=True, LOA_PLAYBOOKS_DIR=str(playbooks),
                 LOA_CONFIG_DIR=str(config), LOA_CORRELATION_WINDOW_S="0.000001",
                 LOA_SMTP_HOST="127.0.0.1", LOA_SMTP_PORT=str(mail[0]),
                 LOA_LINK_SECRET="test-link-secret") as stack:
        yield stack


def routes() -> list[tuple[str, str, Any]]:
    """(method, path, action) of every route of the web app."""
    out = []
    for route in flat_routes(offline_web_app().router.routes):
        if not hasattr(route, "methods"):
            continue  # the static files
        action = route_actions(route)[0]
        out += [(method, route.path, action) for method in sorted(route.methods)]
    return out


def fill(path: str, ids: dict[str, str]) -> str:
    """The path with its parameters filled in (a sample for those not in `ids`)."""
    return re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "sample-x1"), path)


def call(client: httpx.Client, method: str, path: str) -> tuple[int, str, str]:
    """(status, Location, the start of the body) without following a redirect or waiting
    for a stream (the live page) to end."""
    request = client.build_request(method, fill(path, SAMPLE_IDS),
                                   data={} if method == "POST" else None)
    answer = client.send(request, stream=True, follow_redirects=False)
    try:
        body = "" if answer.status_code == 200 else answer.read().decode()[:500]
    finally:
        answer.close()
    return answer.status_code, answer.headers.get("location", ""), body


def test_the_role_table_holds_for_every_route(trust: Stack) -> None:
    """Every route, called anonymously and with a token of every role: refused (401, or the
    login page for a browser page; 403 naming the caller) exactly when the policy says so."""
    clients = {Role.anonymous: trust.anonymous()}
    for role in Role:
        if role != Role.anonymous:
            scope = {"person": "nguyen-van-an"} if role == Role.approver else {}
            clients[role] = trust.http(trust.token(f"table-{role.value}", role.value, **scope))
    wrong = []
    try:
        for method, path, action in routes():
            for role, client in clients.items():
                status, location, body = call(client, method, path)
                allowed = role in POLICY[action]
                refused_by_policy = (status == 401 or location.startswith("/login?next=")
                                     or (status == 403 and "may not" in body))
                if allowed == refused_by_policy:
                    wrong.append(f"{method} {path} as {role.value}: {status} {location} "
                                 f"{body[:80]}")
    finally:
        for client in clients.values():
            client.close()
    assert wrong == [], "\n".join(wrong)


def test_no_timer_publishes_a_strangers_words(trust: Stack) -> None:
    """A drill whose chain runs out in 3 s with `publish`: an anonymous report is refused, a
    tip opens nothing, and reports of a department the playbook does not name or of the
    local operator are held; only the named department's report is published."""
    title = f"Sơ tán ngay {uuid.uuid4().hex[:6]}"
    body = {"kind": "drill-publish", "severity": "extreme", "area": "hn-tay-ho",
            "title": title}
    with trust.anonymous() as http:
        refused = http.post("/api/reports", json=body)
        tip = http.post("/api/tips", json={"text": f"{title}: gọi +84900000000",
                                           "kind": "drill-publish", "area": "hn-tay-ho"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert tip.status_code == 202 and tip.json()["id"].startswith("TIP-")

    clinic = trust.token("clinic-desk", "reporter", department="health")
    held_report = post_report(trust, {**body, "area": "hn-tay-ho-quang-an"}, clinic)
    operator = trust.cli("report", "--kind", "drill-publish", "--severity", "extreme",
                         "--area", "hn-cau-giay", "--title", title,
                         "--operator-reason", "phoned in by the ward", "--json")
    assert operator.returncode == 0, operator.stderr
    construction = trust.token("construction-desk", "reporter", department="construction")
    granted = post_report(trust, {**body, "area": "hn-long-bien"}, construction)

    published = wait_for(lambda: trust.incident_of(granted), 30, "granted report taken in")
    trust.wait_for_status(published, "published", timeout_s=30)
    held = [wait_for(lambda r=r: trust.incident_of(r), 30, "held report taken in")
            for r in (held_report, re.findall(r'"report": "([^"]+)"', operator.stdout)[0])]
    for incident_id in held:
        approval = trust.incident(incident_id)["approval_id"]
        wait_for(lambda a=approval: trust.redis.hget(trust.keys.approval(a), "phase") == "held",
                 30, f"{approval} held")
        assert trust.incident(incident_id)["status"] == "awaiting_approval"
        exhausted = [e for e in trust.timeline(incident_id)
                     if e["action"] == "approval.exhausted"]
        assert len(exhausted) == 1
    public = trust.redis.zrange(trust.keys.statements_published(), 0, -1)
    assert public == [f"STM-{published[4:]}-1"]
    opened_by_tip = [i for i in trust.redis.zrange(trust.keys.incidents(), 0, -1)
                     if "+84900000000" in trust.incident(i).get("title", "")]
    assert opened_by_tip == [] and trust.redis.zcard(trust.keys.tips()) >= 1
    source = trust.incident(held[1])
    assert (source["source_actor"].startswith("operator:"), source["source_verified"],
            source["source_scope"]) == (True, "1", "")


def test_no_stranger_sees_a_contact_or_a_reply_code(trust: Stack, tmp_path: Path,
                                                     mail: tuple[int, Inbox]) -> None:
    """After a flood statement went to known subscribers by SMS and email: no anonymous page,
    feed or API answer, and no staff timeline, carries their contacts or the reply code."""
    csv = tmp_path / "subs.csv"
    csv.write_text(SUBSCRIBERS, encoding="utf-8")
    imported = trust.subscribers("import", str(csv))
    assert imported.returncode == 0, imported.stderr
    incident_id = file_report(trust, flood_body("hn-ba-dinh-kim-ma"))
    prompt = wait_for(lambda: [m for m in trust.sms_sent(to="+84901000101")
                               if incident_id in m["body"]], 30, "the approver's SMS")
    code = re.findall(r"\bYES (\d{4,8})\b", prompt[0]["body"])[0]
    approval_id = f"APR-{incident_id[4:]}-1"
    assert trust.cli("approve", approval_id,
                     *trust.as_person("nguyen-van-an")).returncode == 0
    statement_id = f"STM-{incident_id[4:]}-1"
    wait_for(lambda: trust.sms_sent(to="+84912000002"), 30, "the subscriber's SMS")
    wait_for(lambda: any("dan.trust@mail.example" in r for r in mail[1].recipients), 30,
             "the subscriber's email")

    ids = {**SAMPLE_IDS, "incident_id": incident_id, "statement_id": statement_id,
           "approval_id": approval_id}
    seen = []
    with trust.anonymous() as http:
        for method, path, _ in routes():
            if method != "GET" or path == "/events":
                continue
            answer = http.get(fill(path, ids), follow_redirects=False)
            seen.append((path, answer.text))
        seen += [(p, http.get(p).text) for p in (
            f"/press?q={incident_id}", "/?lang=en", "/?area=hn-ba-dinh-kim-ma",
            f"/cap/{statement_id}.xml", f"/s/{statement_id}")]
    with trust.http() as staff:
        seen.append(("staff timeline", staff.get(f"/api/incidents/{incident_id}").text))
        seen.append(("staff approvals", staff.get("/api/approvals?all=true").text))
    with trust.http(trust.token("press-desk", "press")) as press:
        seen.append(("press", press.get("/api/statements").text))
    assert any(statement_id in text for _, text in seen)  # the crawl did reach the statement
    addressed = {e["detail"]["to"] for e in trust.timeline(incident_id)
                 if e["action"].startswith("delivery.")}
    assert "person:nguyen-van-an" in addressed  # the prompt, by person id
    assert not any(a.startswith("sub-") for a in addressed)  # the audience: counted, not listed
    leaks = [(path, secret) for path, text in seen for secret in [*CONTACTS, f"YES {code}"]
             if secret in text]
    assert leaks == []


def test_incidents_are_read_on_the_cli_only_with_a_staff_credential(trust: Stack) -> None:
    """`loa incidents`, `show`, `approvals` and `dispatch-watch` take a duty officer's or an
    admin's credential (or the local operator's reason), as their API routes do; anyone
    else is refused before anything is read. Published statements are public."""
    reporter = trust.token("reads-reporter", "reporter", area="hn-ba-dinh")
    for command in (["incidents"], ["show", "INC-00001"], ["approvals"],
                    ["dispatch-watch", "STM-00001-1", "--timeout", "1"]):
        nobody = trust.cli(*command)
        assert nobody.returncode == 1 and "this command needs a credential" in nobody.stderr
        refused = trust.cli(*command, "--token", reporter)
        assert refused.returncode == 1, command
        assert "token:reads-reporter (reporter) may not" in " ".join(refused.stderr.split())
    listed = trust.cli("incidents", "--token", trust.token("reads-officer", "duty_officer"))
    assert listed.returncode == 0, listed.stderr
    assert trust.cli("approvals", "--operator-reason", "checking the queue").returncode == 0
    assert trust.cli("statements").returncode == 0


def test_contacts_leave_through_the_cli_only_with_a_credential(trust: Stack, tmp_path: Path
                                                               ) -> None:
    """`loa subscribers` import, add, export and remove need an admin's token or the local
    operator's stated reason; anyone else is refused before anything is read or changed,
    and each command that ran is audited with its caller (counts and ids, no contacts)."""
    csv = tmp_path / "one.csv"
    csv.write_text("phone,email,language,areas,topics,channels,role\n"
                   "0912000077,,vi,hn-ba-dinh,,sms,resident\n", encoding="utf-8")
    commands = {"import": [str(csv)], "export": [],
                "add": ["--area", "hn-ba-dinh", "--channel", "sms", "--phone", "0912000078"],
                "remove": ["0912000077"]}
    before = last_audit_id(trust)
    reporter = trust.token("contacts-reporter", "reporter", area="hn-ba-dinh")
    for command, args in commands.items():
        nobody = trust.cli("subscribers", command, *args)
        assert nobody.returncode == 1
        assert "this command needs a credential" in nobody.stderr
        refused = trust.cli("subscribers", command, "--token", reporter, *args)
        assert refused.returncode == 1
        assert ("token:contacts-reporter (reporter) may not see subscribers' contacts: that "
                "is for admins") in " ".join(refused.stderr.split())
    assert cli_subscriber_entries(trust, before) == []  # nothing done, nothing read
    assert trust.subscribers("export").stdout.count("+8491200007") == 0
    admin = trust.token("contacts-admin", "admin")
    assert trust.cli("subscribers", "import", "--token", admin, str(csv)).returncode == 0
    exported = trust.cli("subscribers", "export", "--token", admin)
    assert "+84912000077" in exported.stdout
    operator = trust.cli("subscribers", "remove", "--operator-reason", "asked by phone",
                         "0912000077")
    assert operator.returncode == 0, operator.stderr
    entries = cli_subscriber_entries(trust, before)
    assert [(e["actor"].partition(":")[0], e["action"]) for e in entries] == [
        ("operator", "subscribers.exported"),  # the check above
        ("token", "subscribers.imported"), ("token", "subscribers.exported"),
        ("operator", "subscriber.opted_out")]
    assert {e["actor"] for e in entries[1:3]} == {"token:contacts-admin"}
    assert entries[1]["detail"] == {"saved": 1, "unchanged": 0, "rejected": 0}
    assert entries[2]["detail"]["count"] == len(exported.stdout.splitlines()) - 1
    assert entries[3]["detail"] == {"reason": "asked by phone"}
    assert entries[3]["subject"].startswith("sub-")
    assert "912000077" not in json.dumps(entries)


def last_audit_id(stack: Stack) -> str:
    """The id of the audit stream's newest entry ("0-0" for none)."""
    newest = stack.redis.xrevrange(stack.keys.audit(), count=1)
    return str(newest[0][0]) if newest else "0-0"


def cli_subscriber_entries(stack: Stack, after: str) -> list[dict[str, Any]]:
    """The audit entries of `loa subscribers` commands after the entry `after`."""
    entries = [json.loads(fields["event"])
               for _, fields in stack.redis.xrange(stack.keys.audit(), f"({after}", "+")]
    return [e for e in entries
            if e["interface"] == "cli" and e["action"].startswith("subscriber")]


def test_a_revoked_token_is_refused_at_once(trust: Stack) -> None:
    """The request right after `loa tokens revoke` gets 401; the list never shows tokens.
    The operator's reasons for making and revoking it, when given, are in the audit trail."""
    before = last_audit_id(trust)
    made = trust.cli("tokens", "add", "short-lived", "--role", "partner",
                     "--operator-reason", "radio station, for the flood season")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    with trust.http(token) as http:
        assert http.get("/api/statements").status_code == 200
        assert trust.cli("tokens", "revoke", "short-lived",
                         "--operator-reason", "the station asked").returncode == 0
        after = http.get("/api/statements")
    assert after.status_code == 401
    assert after.json()["detail"] == "this API token is not valid (unknown or revoked)"
    listed = trust.cli("tokens", "list", "--json").stdout
    assert "short-lived" not in listed and "loa_" not in listed
    entries = [json.loads(fields["event"])
               for _, fields in trust.redis.xrange(trust.keys.audit(), f"({before}", "+")]
    told = [(e["action"], e["subject"], e["detail"].get("reason")) for e in entries
            if e["action"].startswith("token.")]
    assert told == [("token.issued", "short-lived", "radio station, for the flood season"),
                    ("token.revoked", "short-lived", "the station asked")]
    assert {e["actor"] for e in entries if e["action"].startswith("token.")} == {
        f"operator:{getpass.getuser()}"}


def test_bodies_and_path_ids_are_checked_before_anything_is_read(trust: Stack) -> None:
    """A body over the limit is 413 at every door; ids in paths must match their pattern."""
    big = "x" * (300 * 1024)
    with trust.anonymous() as http:
        assert http.post("/api/tips", content=big).status_code == 413
        assert http.post("/tip", content=big).status_code == 413
        # broken JSON at a FastAPI route: named as the body, at its line and column
        broken = http.post("/api/tips", content='{\n "text": "ngập"\n "kind": 1}',
                           headers={"Content-Type": "application/json"})
        assert broken.status_code == 422
        assert broken.json()["errors"] == [{"field": "body", "message": (
            "not valid JSON: Expecting ',' delimiter at line 3 column 2")}]
    with trust.http() as http:
        assert http.post("/api/reports", content=big).status_code == 413
        injected = http.get("/api/incidents/INC-1*")
        assert injected.status_code == 422
        assert injected.json()["errors"][0]["field"].endswith("incident_id")
        for path in ("/api/statements/STM-1:*", "/console/incidents/INC-1*",
                     "/inbox/APR-*", "/statements/STM-1%0A", "/cap/STM-1*.xml"):
            assert http.get(path).status_code == 422, path


def test_tips_are_limited_per_client_but_not_for_a_credential(trust: Stack) -> None:
    """An address sends at most 10 tips in 10 minutes (then 429 with Retry-After); a press
    token's holder, accountable by name, is not limited."""
    tip = {"text": "Có khói ở chợ Đồng Xuân, chưa rõ nguyên nhân", "area": "hn-hoan-kiem"}
    with trust.anonymous() as http:
        answers = [http.post("/api/tips", json=tip) for _ in range(11)]
    statuses = [a.status_code for a in answers]
    assert 429 in statuses and set(statuses[:statuses.index(429)]) == {202}
    assert int(answers[statuses.index(429)].headers["retry-after"]) > 0
    with trust.http(trust.token("tip-press", "press")) as press:
        assert [press.post("/api/tips", json=tip).status_code for _ in range(3)] == [202] * 3
    received = [json.loads(fields["event"]) for _, fields in trust.redis.xrange(
        trust.keys.audit())]
    actors = [e["actor"] for e in received if e["action"] == "tip.received"]
    assert actors[-3:] == ["token:tip-press"] * 3  # accountable by name: the name is kept
    assert "unverified source" in actors  # the anonymous ones
