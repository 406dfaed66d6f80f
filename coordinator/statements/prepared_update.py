"""The update Loa drafts ahead of a promised one. Pure.

When a promise first comes near (the worker's sweep, ``statements.promises``), Loa renders
the playbook's templates again with what the incident knows by then (its reports, the fact
a duty officer stated, a drill's mark) and keeps the result beside the incident with what
the playbook says the update must cover (its follow-up's `note`). The duty officer finds
it filled in on the incident page, corrects it, and sends it for approval as an update:
Loa prepares the words, a person still decides what is said.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from coordinator.city import City
from coordinator.errors import TemplateRenderError
from coordinator.model.incident import draft_version, ids_for
from coordinator.playbooks.models import FollowUp, Playbook
from coordinator.playbooks.render import facts_of, render_draft


def follow_up_for(follow_ups: list[FollowUp], publication: int) -> FollowUp | None:
    """The follow-up promised after the `publication`-th statement (1 = the first): the
    k-th entry, or past the list its last (which repeats by `every`); None for none."""
    if publication <= 0 or not follow_ups:
        return None
    return follow_ups[min(publication, len(follow_ups)) - 1]


def prepare_update(playbook: Playbook | None, incident: dict[str, str], city: City,
                   now: datetime, tz: str, base_url: str) -> dict[str, Any] | None:
    """The update drafted ahead for the stored `incident` (promise in `next_update_by`):
    texts, what it must cover, when; None when there is no playbook or it cannot render.
    Its SMS link names the statement the next draft version would make."""
    if playbook is None or not incident.get("next_update_by"):
        return None
    published = json.loads(incident.get("published") or "[]")
    up = follow_up_for(playbook.follow_ups, len(published))
    version = draft_version(incident.get("draft_id", "")) + 1
    facts = dataclasses.replace(facts_of(incident),
                                link=f"{base_url}/s/{ids_for(incident['id'], version)[2]}")
    try:
        texts = render_draft(playbook, facts, city, now, tz)
    except TemplateRenderError:
        return None
    return {"due": incident["next_update_by"], "covers": up.note if up else "",
            "playbook": playbook.id, "drafted_at": now.isoformat(),
            "texts": [t.model_dump(mode="json") for t in texts]}
