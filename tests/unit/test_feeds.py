"""The Atom and CAP 1.2 builders, validated against the official schemas."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest

from coordinator.city import City, load_city
from coordinator.events import RenderedText, Statement
from coordinator.feeds import atom, cap
from coordinator.settings import REPO_ROOT
from tests.conftest import FIXTURE_MAP
from tests.feed_schemas import CAP_NS, NS, schema, xml_text

BASE = "https://loa.hanoi.example"
TZ = "Asia/Ho_Chi_Minh"
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@cache
def city() -> City:
    """The demo city of config/, loaded once."""
    return load_city(REPO_ROOT / "config", FIXTURE_MAP)


def valid_cap(document: bytes) -> ET.Element:
    """Valid against the OASIS schema and the stricter one (identifier, sender, references
    patterns); returns the parsed alert."""
    schema("CAP-v1.2.xsd").validate(document)
    schema("cap12_extended.xsd").validate(document)
    return ET.fromstring(document)


def valid_atom(document: bytes) -> ET.Element:
    """Valid against the Atom schema; returns the parsed feed."""
    schema("atom.xsd").validate(document)
    return ET.fromstring(document)


def statement(number: int, *, incident: str = "INC-20261122-0001", msg_type: str = "Alert",
              references: list[str] | None = None, severity: str = "severe",
              kind: str = "flood", area: str = "hn-ba-dinh", published: str | None = None,
              title_vi: str = "Ngập sâu phố Kim Mã", english: bool = True) -> dict[str, Any]:
    """A statement dict as `queries.statement_detail` returns it."""
    texts = [RenderedText(channel="web", language="vi", title=title_vi,
                          body="Nước ngập 40 cm.\n\nTránh đi qua khu vực."),
             RenderedText(channel="sms", language="vi", body="Ngập sâu Kim Mã")]
    if english:
        texts.append(RenderedText(channel="web", language="en", title="Deep flooding on Kim Ma",
                                  body="Water is 40 cm deep.\n\nAvoid the area."))
    out: dict[str, Any] = Statement(
        id=f"STM-{incident[4:]}-{number}", incident_id=incident, approval_id="APR-x",
        draft_id="DRF-x", playbook_id="flood", kind=kind, severity=severity, area=area,
        msg_type=msg_type, references=references or [], texts=texts,  # type: ignore[arg-type]
        approved_by=["nguyen-van-an"], approved_at=datetime(2026, 11, 22, 1, 0, tzinfo=UTC),
    ).model_dump(mode="json")
    out["published_at"] = published or f"2026-11-22T0{number}:05:30.123456+00:00"
    return out


def build_cap(s: dict[str, Any], sent_of: dict[str, str] | None = None) -> ET.Element:
    """The CAP alert of statement `s`, checked valid against both CAP schemas."""
    return valid_cap(cap.cap_alert(s, city(), base_url=BASE, timezone=TZ, sent_of=sent_of))


def test_an_alert_in_two_languages_is_valid_cap() -> None:
    """Header values, sent in +07:00 without microseconds, one <info> per web language."""
    alert = build_cap(statement(1))
    assert alert.tag == f"{{{CAP_NS}}}alert"
    assert xml_text(alert, "cap:identifier") == "STM-20261122-0001-1"
    assert xml_text(alert, "cap:sender") == "loa@loa.hanoi.example"
    assert xml_text(alert, "cap:sent") == "2026-11-22T08:05:30+07:00"
    assert (xml_text(alert, "cap:status"), xml_text(alert, "cap:msgType"),
            xml_text(alert, "cap:scope")) == ("Actual", "Alert", "Public")
    assert alert.find("cap:references", NS) is None
    assert xml_text(alert, "cap:incidents") == "INC-20261122-0001"
    infos = alert.findall("cap:info", NS)
    assert [xml_text(i, "cap:language") for i in infos] == ["vi-VN", "en-US"]
    vi, en = infos
    assert [xml_text(vi, f"cap:{t}") for t in ("category", "event", "responseType", "urgency",
                                          "severity", "certainty", "senderName")] == [
        "Met", "flood", "Monitor", "Expected", "Severe", "Observed", "Loa"]
    assert xml_text(vi, "cap:headline") == "Ngập sâu phố Kim Mã"
    assert xml_text(en, "cap:headline") == "Deep flooding on Kim Ma"
    assert xml_text(en, "cap:description") == "Water is 40 cm deep.\n\nAvoid the area."
    assert xml_text(vi, "cap:web") == f"{BASE}/statements/STM-20261122-0001-1"
    assert xml_text(en, "cap:web") == f"{BASE}/statements/STM-20261122-0001-1?lang=en"
    assert xml_text(vi, "cap:area/cap:areaDesc") == "Quận Ba Đình"
    assert xml_text(en, "cap:area/cap:areaDesc") == "Ba Dinh District"
    geocodes = [(xml_text(g, "cap:valueName"), xml_text(g, "cap:value"))
                for g in vi.findall("cap:area/cap:geocode", NS)]
    assert geocodes == [("LOA", "hn-ba-dinh"), ("GSO", "001")]


def test_an_update_carries_its_references() -> None:
    """`sender,identifier,sent` triples, space-separated, sent in +07:00; an unknown
    reference (no publication time) is left out."""
    first, second = "STM-20261122-0001-1", "STM-20261122-0001-2"
    update = statement(3, msg_type="Update", references=[first, second, "STM-unknown-9"],
                       severity="extreme")
    alert = build_cap(update, {first: "2026-11-22T01:05:30.5+00:00",
                               second: "2026-11-22T09:59:59+07:00"})
    assert xml_text(alert, "cap:msgType") == "Update"
    assert xml_text(alert, "cap:references") == (
        f"loa@loa.hanoi.example,{first},2026-11-22T08:05:30+07:00 "
        f"loa@loa.hanoi.example,{second},2026-11-22T09:59:59+07:00")
    info = alert.find("cap:info", NS)
    assert info is not None
    assert (xml_text(info, "cap:urgency"), xml_text(info, "cap:severity"),
            xml_text(info, "cap:certainty")) == ("Immediate", "Extreme", "Observed")


def test_a_cancel_is_an_all_clear() -> None:
    """A Cancel: urgency Past, responseType AllClear; severity and certainty kept."""
    cancel = statement(4, msg_type="Cancel", references=["STM-20261122-0001-1"],
                       severity="moderate", english=False)
    alert = build_cap(cancel, {"STM-20261122-0001-1": "2026-11-22T01:05:30+00:00"})
    assert xml_text(alert, "cap:msgType") == "Cancel"
    infos = alert.findall("cap:info", NS)
    assert len(infos) == 1 and xml_text(infos[0], "cap:language") == "vi-VN"
    assert [xml_text(infos[0], f"cap:{t}") for t in ("responseType", "urgency", "severity",
                                                "certainty")] == [
        "AllClear", "Past", "Moderate", "Likely"]


@pytest.mark.parametrize(("kind", "area", "category", "geocodes"), [
    ("fire", "hn-ba-dinh-kim-ma", "Fire", [("LOA", "hn-ba-dinh-kim-ma")]),
    ("public-health", "hn", "Health", [("LOA", "hn"), ("GSO", "01")]),
    ("utility-outage", "hn-thanh-xuan", "Infra", [("LOA", "hn-thanh-xuan"), ("GSO", "009")]),
    ("misinformation", "hn-long-bien", "Other", [("LOA", "hn-long-bien"), ("GSO", "004")]),
    ("sinkhole", "hn-atlantis", "Other", [("LOA", "hn-atlantis")]),
])
def test_category_and_geocodes(kind: str, area: str, category: str,
                               geocodes: list[tuple[str, str]]) -> None:
    """The category follows the kind; a ward has only Loa's code; an unknown area its code."""
    alert = build_cap(statement(1, kind=kind, area=area, severity="minor"))
    info = alert.find("cap:info", NS)
    assert info is not None
    assert xml_text(info, "cap:category") == category and xml_text(info, "cap:event") == kind
    assert xml_text(info, "cap:urgency") == "Future"
    assert [(xml_text(g, "cap:valueName"), xml_text(g, "cap:value"))
            for g in info.findall("cap:area/cap:geocode", NS)] == geocodes


def test_user_text_is_escaped_never_markup() -> None:
    """A title with a script tag comes out as text in CAP and in Atom."""
    nasty = "<script>alert(1)</script> & \"co\""
    s = statement(1, title_vi=nasty)
    document = cap.cap_alert(s, city(), base_url=BASE, timezone=TZ)
    assert b"&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in document
    assert b"<script>" not in document
    assert xml_text(valid_cap(document), "cap:info/cap:headline") == nasty
    feed = atom.statements_feed([s], city(), base_url=BASE, timezone=TZ, now=NOW, lang="vi")
    assert b"&lt;script&gt;" in feed and b"<script>" not in feed
    assert xml_text(valid_atom(feed), "a:entry/a:title") == nasty


def test_characters_xml_cannot_carry_become_spaces() -> None:
    """A vertical tab pasted from a word processor must not break the feeds."""
    s = statement(1, title_vi="Ngập\x0bphố\x00Kim Mã\ufffe")
    assert xml_text(build_cap(s), "cap:info/cap:headline") == "Ngập phố Kim Mã "
    feed = atom.statements_feed([s], city(), base_url=BASE, timezone=TZ, now=NOW, lang="vi")
    assert xml_text(valid_atom(feed), "a:entry/a:title") == "Ngập phố Kim Mã "


def test_the_atom_feed_lists_statements_newest_first() -> None:
    """Valid Atom; entries newest first with id, offset timestamps, links, categories."""
    older = statement(1)
    newer = statement(2, incident="INC-20261122-0002", kind="fire", severity="extreme",
                      area="hn-hoan-kiem-hang-bac")
    unpublished = {**statement(3), "published_at": None}
    feed = valid_atom(atom.statements_feed([older, newer, unpublished], city(), base_url=BASE,
                                           timezone=TZ, now=NOW, lang="vi"))
    assert feed.get("{http://www.w3.org/XML/1998/namespace}lang") == "vi"
    assert xml_text(feed, "a:id") == f"{BASE}/feed.atom"
    assert xml_text(feed, "a:updated") == "2026-11-22T09:05:30+07:00"
    assert xml_text(feed, "a:author/a:name") == "Loa"
    entries = feed.findall("a:entry", NS)
    assert [xml_text(e, "a:id") for e in entries] == [
        f"{BASE}/statements/STM-20261122-0002-2", f"{BASE}/statements/STM-20261122-0001-1"]
    first = entries[0]
    assert xml_text(first, "a:updated") == "2026-11-22T09:05:30+07:00"
    assert xml_text(first, "a:title") == "Ngập sâu phố Kim Mã"
    assert xml_text(first, "a:summary") == "Nước ngập 40 cm."
    assert xml_text(first, "a:content") == "Nước ngập 40 cm.\n\nTránh đi qua khu vực."
    assert xml_text(first, "a:author/a:name") == "Loa"
    links = [(x.get("rel"), x.get("type"), x.get("hreflang"), x.get("href"))
             for x in first.findall("a:link", NS)]
    assert links == [  # the page of every language the statement is in, the reader's first
        ("alternate", "text/html", "vi", f"{BASE}/statements/STM-20261122-0002-2"),
        ("alternate", "text/html", "en", f"{BASE}/statements/STM-20261122-0002-2?lang=en"),
        ("related", "application/cap+xml", None, f"{BASE}/cap/STM-20261122-0002-2.xml")]
    categories = {x.get("scheme"): x.get("term") for x in first.findall("a:category", NS)}
    assert categories == {"urn:loa:severity": "extreme", "urn:loa:kind": "fire",
                          "urn:loa:area": "hn-hoan-kiem-hang-bac"}


def test_the_atom_feed_in_english_and_empty() -> None:
    """`lang=en` takes the English texts; an empty feed is still valid, updated = now."""
    feed = valid_atom(atom.statements_feed([statement(1)], city(), base_url=BASE, timezone=TZ,
                                           now=NOW, lang="en"))
    assert xml_text(feed, "a:id") == f"{BASE}/feed.atom?lang=en"
    entry = feed.find("a:entry", NS)
    assert entry is not None
    assert xml_text(entry, "a:title") == "Deep flooding on Kim Ma"
    alternate = entry.find("a:link[@rel='alternate']", NS)
    assert alternate is not None and alternate.get("hreflang") == "en"
    assert alternate.get("href") == f"{BASE}/statements/STM-20261122-0001-1?lang=en"
    empty = valid_atom(atom.statements_feed([], city(), base_url=BASE, timezone=TZ, now=NOW,
                                            lang="vi"))
    assert xml_text(empty, "a:updated") == "2026-11-22T16:00:00+07:00"
    assert empty.findall("a:entry", NS) == []


def test_the_cap_index_lists_the_alerts_in_force() -> None:
    """Per incident only the newest statement, and none when that one is a Cancel."""
    flood_1 = statement(1)
    flood_2 = statement(2, msg_type="Update", references=[flood_1["id"]])
    fire_1 = statement(1, incident="INC-20261122-0002", kind="fire")
    fire_cancel = statement(3, incident="INC-20261122-0002", kind="fire", msg_type="Cancel",
                            references=[fire_1["id"]])
    health = statement(4, incident="INC-20261122-0003", kind="public-health")
    everything = [health, fire_cancel, flood_2, fire_1, flood_1]
    assert [s["id"] for s in cap.current_alerts(everything)] == [health["id"], flood_2["id"]]
    index = valid_atom(atom.cap_index(everything, city(), base_url=BASE, timezone=TZ, now=NOW,
                                      lang="vi"))
    assert xml_text(index, "a:id") == f"{BASE}/cap.xml"
    entries = index.findall("a:entry", NS)
    hrefs = [e.find("a:link[@type='application/cap+xml']", NS) for e in entries]
    assert [(h.get("rel"), h.get("href")) for h in hrefs if h is not None] == [
        ("alternate", f"{BASE}/cap/{health['id']}.xml"),
        ("alternate", f"{BASE}/cap/{flood_2['id']}.xml")]
    assert xml_text(entries[1], "a:updated") == "2026-11-22T09:05:30+07:00"
    assert [e.find("a:category", NS).get("term") for e in entries  # type: ignore[union-attr]
            ] == ["Alert", "Update"]
    empty = valid_atom(atom.cap_index([fire_1, fire_cancel], city(), base_url=BASE,
                                      timezone=TZ, now=NOW, lang="vi"))
    assert empty.findall("a:entry", NS) == []


def test_sent_uses_the_configured_timezone() -> None:
    """Another timezone, another offset; UTC is written +00:00, never Z."""
    s = statement(1)
    utc = valid_cap(cap.cap_alert(s, city(), base_url=BASE, timezone="UTC"))
    assert xml_text(utc, "cap:sent") == "2026-11-22T01:05:30+00:00"
    ny = valid_cap(cap.cap_alert(s, city(), base_url=BASE, timezone="America/New_York"))
    assert xml_text(ny, "cap:sent") == "2026-11-21T20:05:30-05:00"
