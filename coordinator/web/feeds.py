"""Public machine-readable feeds (no login): Atom 1.0 and OASIS CAP 1.2.

- ``GET /feed.atom`` — Atom feed of the published statements, newest first
  (``?lang=`` one of config/languages.yaml, default the city's; another is a 422).
- ``GET /cap.xml`` — the *index* of the CAP alerts in force. A CAP message carries one
  ``<alert>``, so several alerts cannot share one CAP document; CAP aggregators (Google
  Public Alerts among them) poll an Atom (or RSS) index instead, whose entries link to the
  alerts. So ``/cap.xml`` is an Atom feed with one entry per current alert — of each
  incident its newest published statement, unless that one is a Cancel — each entry with
  ``<link rel="alternate" type="application/cap+xml" href=".../cap/{id}.xml">``.
- ``GET /cap/{statement_id}.xml`` — one CAP 1.2 ``<alert>``; 404 for an unknown or
  unpublished statement.
- ``GET /audit/head`` — the audit chain's newest signed checkpoints (link number, hash,
  time): keep one, and `loa audit verify --head SEQ:HASH` later proves whether the
  history before it was rewritten.

The XML is built by the pure builders of :mod:`coordinator.feeds`; this module only loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException, Request, Response

from coordinator import queries
from coordinator.access import Action
from coordinator.audit.chain import Checkpoint
from coordinator.feeds import ATOM_TYPE, CAP_TYPE, atom, cap
from coordinator.web.auth import locked_router
from coordinator.web.ids import StatementId
from coordinator.web.public_cache import cached
from coordinator.web.state import State, web_state

feeds = locked_router(Action.public_read, include_in_schema=False)

CAP_INDEX_LIMIT = 500  # statements looked at for the alerts in force
AUDIT_HEADS_SHOWN = 50  # checkpoints /audit/head lists


def _language(st: State, lang: str) -> str:
    """A declared language (`?lang=`; none: the city's); 422 naming the field for another."""
    if lang and not st.city.languages.known(lang):
        raise HTTPException(422, f"lang: {lang!r} is not one of this city's languages "
                                 f"({', '.join(st.city.languages.tags)})")
    return st.city.languages.pick(lang)


@feeds.get("/feed.atom")
@cached
async def atom_feed(request: Request, lang: str = "") -> Response:
    """Atom 1.0 feed of the published statements, newest first."""
    st = web_state(request)
    statements = await queries.published_statements(st.redis, st.keys)
    body = atom.statements_feed(statements, st.city, base_url=st.settings.web_url(),
                                timezone=st.settings.timezone, now=datetime.now(UTC),
                                lang=_language(st, lang))
    return Response(body, media_type=ATOM_TYPE)


@feeds.get("/cap.xml")
@cached
async def cap_index(request: Request, lang: str = "") -> Response:
    """Atom index of the CAP 1.2 alerts in force, each entry linking to its alert."""
    st = web_state(request)
    statements = await queries.published_statements(st.redis, st.keys, limit=CAP_INDEX_LIMIT)
    body = atom.cap_index(statements, st.city, base_url=st.settings.web_url(),
                          timezone=st.settings.timezone, now=datetime.now(UTC),
                          lang=_language(st, lang),
                          valid_for_s=st.settings.cap_valid_for_s)
    return Response(body, media_type=ATOM_TYPE)


@feeds.get("/cap/{statement_id}.xml")
@cached
async def cap_alert(statement_id: StatementId, request: Request) -> Response:
    """One published statement as a CAP 1.2 alert."""
    st = web_state(request)
    statement = await _published(st, statement_id)
    body = cap.cap_alert(statement, st.city, base_url=st.settings.web_url(),
                         timezone=st.settings.timezone,
                         sent_of=await _sent_of(st, statement.get("references") or []),
                         valid_for_s=st.settings.cap_valid_for_s)
    return Response(body, media_type=CAP_TYPE)


@feeds.get("/audit/head")
async def audit_head(request: Request) -> Response:
    """The newest signed checkpoints of the audit chain, newest first."""
    st = web_state(request)
    recent = await queries.audit_checkpoints(st.redis, st.keys, AUDIT_HEADS_SHOWN)
    checkpoints = [asdict(Checkpoint.from_fields(fields)) for fields in recent]
    body = {"head": checkpoints[0] if checkpoints else None, "recent": checkpoints,
            "how": "keep a head's seq and hash; the operator's `loa audit verify --head "
                   "SEQ:HASH` fails if the history before it was changed"}
    return Response(json.dumps(body, indent=1), media_type="application/json",
                    headers={"Cache-Control": "no-cache"})


async def _published(st: State, statement_id: str) -> dict[str, Any]:
    found = await queries.statement_detail(st.redis, st.keys, statement_id)
    if found is None or not found.get("published_at"):
        raise HTTPException(404, f"no published statement {statement_id}")
    return found


async def _sent_of(st: State, statement_ids: list[str]) -> dict[str, str]:
    """When each of these statements was published (unpublished ones are left out); one
    round trip for all."""
    found = await queries.statement_details(st.redis, st.keys, statement_ids)
    return {i: s["published_at"] for i, s in zip(statement_ids, found, strict=True)
            if s is not None and s.get("published_at")}
