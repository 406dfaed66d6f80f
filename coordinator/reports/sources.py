"""Who filed a report, as Loa authenticated them, and the report's id in their namespace.
Pure."""

from __future__ import annotations

import uuid

from coordinator.access import Principal
from coordinator.events import ReportSource


def namespaced_report_id(principal: Principal, client_id: str | None) -> str:
    """The stored id of a report: the caller's kind and name, then their own id (or a fresh
    one), so that no client can take or overwrite another's: `t.fire-hq:rep-1`. A token of
    a name given again has its own ids too: `t.fire-hq:2:rep-1`."""
    own = client_id or f"rep-{uuid.uuid4().hex[:16]}"
    credential = f"{principal.credential}:" if principal.credential else ""
    return f"{principal.kind[0]}.{principal.username}:{credential}{own}"


def source_of(principal: Principal) -> ReportSource:
    """The report's source: the caller's audit actor, role and scope."""
    return ReportSource(actor=principal.actor, role=principal.role.value,
                        scope=principal.scope, verified=principal.verified)
