"""The public pages: current statements (filterable, live), each statement's own page, the
short link SMS messages carry, and the press archive (searchable, every version)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from coordinator import queries
from coordinator.access import Action
from coordinator.city import City
from coordinator.feeds.claim_review import claim_review, script_json
from coordinator.languages import without_diacritics
from coordinator.model.incident import incident_of_statement
from coordinator.web.auth import locked_router
from coordinator.web.ids import StatementId
from coordinator.web.pages import language_of, page
from coordinator.web.public_cache import cached
from coordinator.web.state import State, web_state

public = locked_router(Action.public_read, include_in_schema=False)


def near(city: City, selected: str, area: str) -> bool:
    """A statement about `area` concerns someone who picked `selected`: the same area, one
    that contains it (the whole city), one inside it (a ward of the grouping) or one that
    shares ground with it."""
    if area not in city.areas:  # of an earlier map: under the city as a whole, or itself
        chosen = city.areas.get(selected)
        return selected == area or (chosen is not None and chosen.parent is None)
    return selected in city.overlapping(area)


def folded(text: str) -> str:
    """Lower-case without diacritics (so `ngap` finds `Ngập`, `dong da` finds `Đống Đa`)."""
    return without_diacritics(text).lower()


def current(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest statement of each incident (an update replaces what it updates)."""
    seen: set[str] = set()
    out = []
    for s in statements:  # newest first
        if s["incident_id"] not in seen:
            seen.add(s["incident_id"])
            out.append(s)
    return out


async def visible(st: State, area: str) -> list[dict[str, Any]]:
    """Current statements for the public page, filtered by area."""
    found = current(await queries.published_statements(st.redis, st.keys))
    if area and area in st.city.areas:
        found = [s for s in found if near(st.city, area, s["area"])]
    return found


@public.get("/", response_class=HTMLResponse)
@cached
async def home(request: Request, lang: str = "", area: str = "",
               fragment: bool = False) -> HTMLResponse:
    """Current statements, newest first; `?area=` and `?lang=` filter; updates itself."""
    st = web_state(request)
    lang = language_of(request, lang)
    statements = await visible(st, area)
    return page(request, "statements_list.html" if fragment else "index.html",
                statements=statements, lang=lang, area=area, areas=st.city.known_areas,
                version=request.app.state.live.version,
                known_area=area if area in st.city.areas else "",
                area_path=st.city.ancestors(area) if area in st.city.areas else [])


@public.get("/events")
async def events(request: Request, after: str = "") -> StreamingResponse:
    """Server-sent events: `statement` when one is published, carrying its card in every
    language (the page puts it in place: no page comes back for the list); `reload` when one
    is withdrawn or a reconnecting page missed more than is kept; a heartbeat every 15 s.
    `Last-Event-ID` catches a reconnecting page up, `?after=` a page that just loaded (the
    change its list was drawn at)."""
    live = request.app.state.live
    return StreamingResponse(live.stream(request.headers.get("last-event-id") or after),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@public.get("/s/{statement_id}")
async def short_link(statement_id: StatementId, request: Request, lang: str = ""
                     ) -> RedirectResponse:
    """The short link that SMS messages carry (`?lang=`: the reader's language). A text
    kept from an earlier version (an edit, a translation) carries that version's link,
    which was never published: it leads to what its incident published since."""
    st = web_state(request)
    found = await queries.statement_detail(st.redis, st.keys, statement_id)
    if found is None or not found.get("published_at"):
        latest = (await queries.incident_row(
            st.redis, st.keys, incident_of_statement(statement_id))).get("statement_id")
        await published(st, latest or statement_id)
        statement_id = latest or statement_id
    query = st.city.languages.query(st.city.languages.pick(lang))
    return RedirectResponse(f"/statements/{statement_id}" + (f"?lang={query}" if query else ""),
                            status_code=307)


@public.get("/statements/{statement_id}", response_class=HTMLResponse)
@cached
async def statement_page(statement_id: StatementId, request: Request, lang: str = ""
                         ) -> HTMLResponse:
    """One statement's own page: the stable link that messages carry."""
    st = web_state(request)
    found = await published(st, statement_id)
    lang = language_of(request, lang)
    review = None
    claim = (await queries.claims_of(st.redis, st.keys, [found["incident_id"]])).get(
        found["incident_id"])
    if claim and not found.get("exercise") and not found.get("withdrawn_at"):
        claim["spreading"] = found.get("spreading", [])  # as approved, not reported since
        review = script_json(claim_review(
            found, claim, st.settings.web_url(), lang, st.settings.timezone,
            st.city.catalogs.gettext(lang, "False")))
    return page(request, "statement.html", s=found, lang=lang, areas=st.city.known_areas,
                claim_review=review)


@public.get("/rumours", response_class=HTMLResponse)
@cached
async def rumours(request: Request, lang: str = "") -> HTMLResponse:
    """Rumour control: each false claim the city corrected and the official fact, newest
    first (the latest correction of each)."""
    st = web_state(request)
    statements = current(await queries.published_statements(st.redis, st.keys, limit=500))
    claims = await queries.claims_of(st.redis, st.keys, [s["incident_id"] for s in statements])
    rows = [{"statement": s, **claims[s["incident_id"]], "fact": s.get("fact", ""),
             "source": s.get("fact_source", "")}
            for s in statements if s["incident_id"] in claims]
    return page(request, "rumours.html", rows=rows, lang=language_of(request, lang),
                areas=st.city.known_areas)


@public.get("/exercises", response_class=HTMLResponse)
@cached
async def exercises(request: Request, lang: str = "") -> HTMLResponse:
    """Drills' statements, newest first: kept apart from the real ones, which never list
    them."""
    st = web_state(request)
    statements = await queries.published_statements(st.redis, st.keys, exercises=True)
    return page(request, "exercises.html", statements=statements, lang=language_of(request, lang),
                areas=st.city.known_areas)


@public.get("/press", response_class=HTMLResponse)
@cached
async def press(request: Request, q: str = "", lang: str = "") -> HTMLResponse:
    """Every official statement, grouped by incident with each version and its times;
    `?q=` searches titles and text (diacritics optional)."""
    st = web_state(request)
    statements = await queries.published_statements(st.redis, st.keys, limit=1000)
    needle = folded(q.strip())
    if needle:
        statements = [s for s in statements if needle in folded(" ".join(
            f"{t['title']} {t['body']}" for t in s["texts"]) + " " + s["id"])]
    incidents: dict[str, list[dict[str, Any]]] = {}
    for s in statements:
        incidents.setdefault(s["incident_id"], []).append(s)
    return page(request, "press.html", incidents=incidents, q=q, lang=language_of(request, lang),
                areas=st.city.known_areas)


async def published(st: State, statement_id: str) -> dict[str, Any]:
    """A published statement; 404 for an unknown or unpublished (e.g. rejected) one."""
    found = await queries.statement_detail(st.redis, st.keys, statement_id)
    if found is None or not found.get("published_at"):
        raise HTTPException(404, f"no published statement {statement_id}")
    return found
