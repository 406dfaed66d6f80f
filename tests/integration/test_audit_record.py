"""The record proves itself on the running stack: the worker seals what an incident did,
`loa audit verify` says the chain holds, /audit/head publishes a signed head to anyone, and
one audit entry changed in Redis makes `loa audit verify` fail naming that entry."""

from __future__ import annotations

import json
from typing import cast

import pytest

from tests.integration.factories import REWRITE_AUDIT_ENTRY, file_report, report_body
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def test_a_changed_audit_entry_fails_verification_at_that_entry(stack: Stack) -> None:
    incident_id = file_report(stack, report_body("hn-ba-dinh-truc-bach"))
    timeline = stack.timeline(incident_id)
    chain_key = stack.keys.incident_chain(incident_id)
    wait_for(lambda: stack.redis.llen(chain_key) >= len(timeline), 10, "the timeline sealed")
    auditor = stack.token("auditor", "monitor")

    held = stack.cli("audit", "verify", "--token", auditor)
    assert held.returncode == 0, held.stdout + held.stderr
    assert "audit chain holds" in held.stdout
    with stack.anonymous() as http:
        published = http.get("/audit/head").json()
    head = published["head"]
    assert head is not None and len(head["hash"]) == 64 and head["signature"]
    kept = f"{head['seq']}:{head['hash']}"
    assert stack.cli("audit", "verify", "--token", auditor, "--head", kept).returncode == 0

    # the incident's opening, as the audit stream holds it: change who did it
    opened = cast(str, stack.redis.lindex(chain_key, 0)).split(" ")[0]
    original = stack.redis.xrange(stack.keys.audit(), opened, opened)[0][1]["event"]
    forged = json.dumps({**json.loads(original), "actor": "someone-else"})
    stack.redis.eval(REWRITE_AUDIT_ENTRY, 1, stack.keys.audit(), opened, forged)
    try:
        broken = stack.cli("audit", "verify", "--token", auditor)
        assert broken.returncode == 1
        assert f"audit entry {opened}" in broken.stderr and "changed after link" in (
            broken.stderr)
        # a monitor may verify; a duty officer may not
        officer = stack.token("duty-officer", "duty_officer")
        refused = stack.cli("audit", "verify", "--token", officer)
        assert refused.returncode == 1 and "may not verify the audit trail" in refused.stderr
    finally:
        stack.redis.eval(REWRITE_AUDIT_ENTRY, 1, stack.keys.audit(), opened, original)
    assert stack.cli("audit", "verify", "--token", auditor).returncode == 0
