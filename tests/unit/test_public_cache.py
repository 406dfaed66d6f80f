"""Public reads from memory, the pure and in-process parts: one rendering for many askers,
a new version or the TTL renders again, 304 for a client that has it, the live events a
reconnecting page missed, and bounded admission."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.responses import HTMLResponse, Response
from starlette.requests import Request

from coordinator.city import load_city
from coordinator.keys import Keys
from coordinator.reports.tips import voice_of
from coordinator.settings import Settings
from coordinator.web.admission import Admission
from coordinator.web.live import Change, Live, stream_id
from coordinator.web.public_cache import PublicCache, answer_from
from tests.conftest import FIXTURE_MAP


def counting_render(calls: list[int], status: int = 200, delay_s: float = 0.01) -> Any:
    async def render() -> Response:
        calls.append(1)
        await asyncio.sleep(delay_s)
        return HTMLResponse(f"<p>render {len(calls)}</p>", status_code=status)
    return render


async def test_many_askers_share_one_rendering_until_the_version_changes() -> None:
    cache, calls = PublicCache(ttl_s=60), []
    render = counting_render(calls)
    answers = await asyncio.gather(*(cache.get("/?", "1-0", render) for _ in range(50)))
    assert len(calls) == 1 and {a.body for a in answers} == {b"<p>render 1</p>"}  # type: ignore[union-attr]
    again = await cache.get("/?", "1-0", render)
    assert len(calls) == 1 and again.body == b"<p>render 1</p>"  # type: ignore[union-attr]
    newer = await cache.get("/?", "2-0", render)  # a statement was published
    assert len(calls) == 2 and newer.body == b"<p>render 2</p>"  # type: ignore[union-attr]


async def test_the_ttl_renders_again_and_an_error_is_not_kept() -> None:
    calls: list[int] = []
    expired = PublicCache(ttl_s=0)
    await expired.get("/?", "1-0", counting_render(calls))
    await expired.get("/?", "1-0", counting_render(calls))
    assert len(calls) == 2
    failing, bad = PublicCache(ttl_s=60), []
    first = await failing.get("/s", "1-0", counting_render(bad, status=404))
    assert isinstance(first, Response) and first.status_code == 404
    await failing.get("/s", "1-0", counting_render(bad, status=404))
    assert len(bad) == 2 and "/s" not in failing.entries


async def test_a_client_that_has_the_page_gets_304_with_the_caching_headers() -> None:
    cache = PublicCache(ttl_s=5)
    entry = await cache.get("/?", "1-0", counting_render([]))
    assert not isinstance(entry, Response)

    def request(*headers: tuple[bytes, bytes]) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/", "headers": list(headers),
                        "query_string": b""})

    fresh = answer_from(entry, request(), 5, "Fri, 04 Dec 2026 05:00:00 GMT")
    assert fresh.status_code == 200 and fresh.body == b"<p>render 1</p>"
    assert fresh.headers["cache-control"] == "public, max-age=5, stale-while-revalidate=10"
    assert fresh.headers["etag"] == entry.etag and entry.etag.startswith('"')
    assert fresh.headers["last-modified"] == "Fri, 04 Dec 2026 05:00:00 GMT"
    same = answer_from(entry, request((b"if-none-match", f'W/{entry.etag}'.encode())), 5, "x")
    assert same.status_code == 304 and same.body == b""
    other = answer_from(entry, request((b"if-none-match", b'"other"')), 5, "x")
    assert other.status_code == 200


def live() -> Live:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return Live(None, Keys("t"), load_city(settings.config_dir, FIXTURE_MAP),  # type: ignore[arg-type]
                lambda s, lang: f"<article>{s['id']} {lang}</article>", {"vi": "", "en": ""})


def test_a_reconnecting_page_gets_what_it_missed_or_is_told_to_reload() -> None:
    assert stream_id("1733300000000-2") == (1733300000000, 2) and stream_id("x") == (-1, -1)
    watcher = live()
    watcher.horizon = "100-0"
    watcher.recent.extend([Change("101-0", "a"), Change("102-0", "b"), Change("103-0", "c")])
    assert watcher.missed("101-0", "103-0") == ["b", "c"]
    assert watcher.missed("100-0", "102-0") == ["a", "b"]
    assert watcher.missed("103-0", "103-0") == []
    assert watcher.missed("99-0", "103-0") is None  # from before what is kept: reload
    assert watcher.missed("garbage", "103-0") is None


def test_a_published_statement_travels_with_its_card_in_every_language() -> None:
    watcher = live()
    statement = {"id": "STM-00001-1", "incident_id": "INC-00001", "area": "hn-ba-dinh-kim-ma",
                 "published_at": "2026-12-04T05:00:00+00:00"}
    text = watcher.event_text("105-0", {"change": "published", "statement": "STM-00001-1"},
                              statement)
    assert text.startswith("id: 105-0\nevent: statement\ndata: {") and text.endswith("\n\n")
    assert ('"path": ["hn-ba-dinh-kim-ma", "hn-ba-dinh", "hn"]' in text
            and '"en": "<article>STM-00001-1 en</article>"' in text)
    withdrawn = watcher.event_text("106-0", {"change": "published"}, {
        **statement, "withdrawn_at": "2026-12-04T05:10:00+00:00"})
    assert "event: reload" in withdrawn  # a promise moved on a withdrawn one: no card
    gone = watcher.event_text("106-0", {"change": "withdrawn", "statement": "STM-00001-1"},
                              None)
    assert gone == 'id: 106-0\nevent: reload\ndata: {"statement": "STM-00001-1"}\n\n'


async def test_admission_refuses_at_once_past_its_bound() -> None:
    release = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    gate = Admission(slow_app, limit=1)
    scope = {"type": "http", "path": "/", "headers": []}
    first = asyncio.create_task(gate(scope, None, record))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await gate(scope, None, record)  # type: ignore[arg-type]
    assert sent[0]["status"] == 503 and (b"retry-after", b"1") in sent[0]["headers"]
    events = asyncio.create_task(gate({**scope, "path": "/events"}, None, record))  # type: ignore[arg-type]
    release.set()
    await asyncio.gather(first, events)
    assert [m["status"] for m in sent if "status" in m] == [503, 200, 200]
    assert gate.in_flight == 0


def test_an_anonymous_tipper_is_counted_by_a_keyed_hash_of_their_address() -> None:
    settings = Settings(_env_file=None, secret_key="k")  # type: ignore[call-arg]
    one = voice_of("203.0.113.7", settings)
    assert one == voice_of("203.0.113.7", settings) != voice_of("203.0.113.8", settings)
    assert "203" not in one and len(one) == 24
    # One household's IPv6 addresses (a /64) are one voice; another /64 is another.
    assert voice_of("2001:db8:1:2::10", settings) == voice_of("2001:db8:1:2:ffff::1", settings)
    assert voice_of("2001:db8:1:3::10", settings) != voice_of("2001:db8:1:2::10", settings)
    other_key = Settings(_env_file=None, secret_key="other")  # type: ignore[call-arg]
    assert voice_of("203.0.113.7", other_key) != one
