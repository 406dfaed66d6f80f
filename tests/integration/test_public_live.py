"""The public page under load, on the real stack with two web processes: the list is served
from memory with ETag/304 and caching headers, and a publication is seen at once; a live
page on either process gets the new statement's card in its event, and a page that
reconnects with Last-Event-ID is caught up."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.factories import approve_a_flood
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration


class Listener:
    """An open `/events` stream in a thread, keeping every event it hears."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        self.events: list[tuple[str, str, dict[str, object]]] = []  # (id, type, data)
        self.open = threading.Event()
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.thread = threading.Thread(target=self._listen, args=(url, headers), daemon=True)
        self.thread.start()
        assert self.open.wait(15), f"{url}/events did not open"

    def _listen(self, url: str, headers: dict[str, str]) -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream(  # ends with its process
                "GET", f"{url}/events", headers=headers, timeout=120) as events:
            self.open.set()
            event_id, kind = "", "message"
            for line in events.iter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.append((event_id, kind, json.loads(line[6:])))

    def statement(self, statement_id: str) -> tuple[str, dict[str, object]] | None:
        return next(((i, d) for i, k, d in self.events
                     if k == "statement" and d.get("id") == statement_id), None)


@pytest.fixture
def second_web(stack: Stack) -> Iterator[str]:
    proc, url = stack.another_web()
    yield url
    proc.terminate()
    proc.wait(30)


def test_the_list_is_cached_revalidated_and_new_at_once_after_a_publication(
        stack: Stack) -> None:
    # A web process that keeps pages an hour: only the publication can make the list new.
    proc, kept_web = stack.another_web("web-kept", LOA_PUBLIC_CACHE_S="3600")
    try:
        cached_then_published(stack, kept_web)
    finally:
        proc.terminate()
        proc.wait(30)


def cached_then_published(stack: Stack, web_url: str) -> None:
    with httpx.Client(base_url=web_url, timeout=30) as public:
        first = public.get("/", params={"area": "hn-hoang-mai-giap-bat"})
        etag = first.headers["etag"]
        assert first.status_code == 200 and first.headers["cache-control"] == (
            "public, max-age=3600, stale-while-revalidate=10")
        junk = public.get("/", params={"area": "hn-hoang-mai-giap-bat", "x": "1"})
        assert junk.headers["etag"] == etag  # an unknown parameter is the same page
        assert first.headers["last-modified"].endswith(" GMT")
        again = public.get("/", params={"area": "hn-hoang-mai-giap-bat"},
                           headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag
        title = f"Ngập Giáp Bát {uuid.uuid4().hex[:6]}"
        incident_id, statement_id = approve_a_flood(stack, "hn-hoang-mai-giap-bat", title)
        stack.wait_for_status(incident_id, "published")
        # Kept for an hour, yet the publication is seen by the very next request.
        fresh = wait_for(lambda: (r := public.get("/", params={
            "area": "hn-hoang-mai-giap-bat"}, headers={"If-None-Match": etag})
                                  ).status_code == 200 and r, 3, "the new list")
        assert statement_id in fresh.text and title in fresh.text
        assert fresh.headers["etag"] != etag


def test_live_pages_on_two_web_processes_get_the_card_and_catch_up(
        stack: Stack, second_web: str) -> None:
    one, two = Listener(stack.web_url), Listener(second_web)
    title = f"Ngập Lĩnh Nam {uuid.uuid4().hex[:6]}"
    incident_id, statement_id = approve_a_flood(stack, "hn-hoang-mai-linh-nam", title)
    heard = [wait_for(lambda w=w: w.statement(statement_id), 20, "the statement event")
             for w in (one, two)]
    (id_one, data), (id_two, _) = heard
    assert id_one == id_two  # the same change, the same id, in every process
    assert data["incident"] == incident_id and data["area"] == "hn-hoang-mai-linh-nam"
    assert data["path"] == ["hn-hoang-mai-linh-nam", "hn-hoang-mai", "hn"]
    cards = data["cards"]
    assert isinstance(cards, dict) and set(cards) == {"vi", "en", "fr", "th"}
    assert title in cards["vi"] and f'id="{statement_id}"' in cards["en"]
    assert f'data-incident="{incident_id}"' in cards["vi"]

    # A page that lost its connection just before reconnects to the other process and is
    # given the event it missed.
    before = next(i for i, _, d in two.events if d.get("id") == statement_id)
    millis, seq = before.split("-")
    late = Listener(second_web, last_event_id=f"{millis}-{int(seq) - 1}" if int(seq)
                    else f"{int(millis) - 1}-99999")
    assert wait_for(lambda: late.statement(statement_id), 10, "the caught-up event")
    # A process started after the publication knows nothing from before it: a page that
    # comes to it having missed more is told to reload its list.
    proc, third_web = stack.another_web("web3")
    try:
        lost = Listener(third_web, last_event_id="1-0")
        wait_for(lambda: any(k == "reload" for _, k, _ in lost.events), 10, "reload")
    finally:
        proc.terminate()
        proc.wait(30)
