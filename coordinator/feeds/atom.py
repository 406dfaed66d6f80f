"""Atom 1.0 (RFC 4287) feeds: the published statements, and the index of current CAP alerts.

The CAP index is what CAP aggregators (e.g. Google Public Alerts) poll: an Atom feed
with one entry per alert in force, each linking to the alert itself with
``<link rel="alternate" type="application/cap+xml">``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from coordinator.city import City
from coordinator.feeds import (
    ATOM_NS,
    XML_LANG,
    cap_url,
    local_stamp,
    published_at,
    statement_url,
    web_languages,
    web_text,
    xml_safe,
)
from coordinator.feeds.cap import current_alerts
from coordinator.translations import N_

AUTHOR = "Loa"
SCHEME = "urn:loa:"  # scheme of our <category> terms: urn:loa:severity, urn:loa:kind, ...
SUMMARY_CHARS = 280
TITLES = {"statements": N_("Loa: official statements"), "alerts": N_("Loa: current CAP alerts")}


def statements_feed(statements: Iterable[dict[str, Any]], city: City, *, base_url: str,
                    timezone: str, now: datetime, lang: str) -> bytes:
    """The Atom feed of published statements, newest first, with texts in `lang` (else
    its fallback order) and a link to the page of every language each one is in.

    `now` is the feed's `<updated>` only when there is no statement.
    """
    ordered = _newest_first(statements)
    feed = _feed("feed.atom", "statements", city, base_url, lang,
                 local_stamp(published_at(ordered[0]) if ordered else now, timezone))
    for statement in ordered:
        _statement_entry(feed, statement, city, base_url, timezone, lang)
    return _bytes(feed)


def cap_index(statements: Iterable[dict[str, Any]], city: City, *, base_url: str,
              timezone: str, now: datetime, lang: str, valid_for_s: float = 86400.0
              ) -> bytes:
    """The Atom index of the CAP alerts in force (see `cap.current_alerts`: not cancelled,
    not expired), newest first."""
    current = current_alerts(statements, now, valid_for_s)
    feed = _feed("cap.xml", "alerts", city, base_url, lang,
                 local_stamp(published_at(current[0]) if current else now, timezone))
    for statement in current:
        _alert_entry(feed, statement, city, base_url, timezone, lang)
    return _bytes(feed)


def summary(body: str) -> str:
    """The first paragraph of a body, cut to SUMMARY_CHARS characters."""
    first = next((p.strip() for p in body.split("\n\n") if p.strip()), "")
    return first if len(first) <= SUMMARY_CHARS else first[:SUMMARY_CHARS - 1].rstrip() + "…"


def _newest_first(statements: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    published = [s for s in statements if s.get("published_at")]
    return sorted(published, key=published_at, reverse=True)


def _feed(path: str, which: str, city: City, base_url: str, lang: str, updated: str
          ) -> ET.Element:
    """The `<feed>` with its own metadata; entries are appended after."""
    base = base_url.rstrip("/")
    query = f"?lang={lang}" if city.languages.query(lang) else ""
    own = f"{base}/{path}{query}"
    feed = ET.Element("feed", {"xmlns": ATOM_NS, XML_LANG: lang})
    _add(feed, "id", own)
    _add(feed, "title", city.catalogs.gettext(lang, TITLES[which]), type="text")
    _add(feed, "updated", updated)
    _add(feed, "link", rel="self", type="application/atom+xml", href=own)
    _add(feed, "link", rel="alternate", type="text/html", href=f"{base}/{query}")
    _add(_add(feed, "author"), "name", AUTHOR)
    _add(feed, "generator", "Loa")
    return feed


def _statement_entry(feed: ET.Element, statement: dict[str, Any], city: City, base_url: str,
                     timezone: str, lang: str) -> None:
    text = web_text(statement, city.languages.order(lang))
    stamp = local_stamp(published_at(statement), timezone)
    entry = _add(feed, "entry", **{XML_LANG: text["language"]})  # a fallback's, when it is
    _add(entry, "id", statement_url(base_url, statement["id"]))
    _add(entry, "title", text.get("title") or statement["id"], type="text")
    _add(entry, "updated", stamp)
    _add(entry, "published", stamp)
    _add(_add(entry, "author"), "name", AUTHOR)
    for language in dict.fromkeys([text["language"], *web_languages(statement)]):
        _add(entry, "link", rel="alternate", type="text/html", hreflang=language,
             href=statement_url(base_url, statement["id"], city.languages.query(language)))
    _add(entry, "link", rel="related", type="application/cap+xml",
         href=cap_url(base_url, statement["id"]))
    _add(entry, "category", term=statement["severity"], scheme=f"{SCHEME}severity")
    _add(entry, "category", term=statement["kind"], scheme=f"{SCHEME}kind")
    _add(entry, "category", term=statement["area"], scheme=f"{SCHEME}area",
         label=city.area_name(statement["area"], lang))
    _add(entry, "summary", summary(text.get("body", "")), type="text")
    _add(entry, "content", text.get("body", ""), type="text")


def _alert_entry(feed: ET.Element, statement: dict[str, Any], city: City, base_url: str,
                 timezone: str, lang: str) -> None:
    text = web_text(statement, city.languages.order(lang))
    entry = _add(feed, "entry", **{XML_LANG: text["language"]})
    _add(entry, "id", cap_url(base_url, statement["id"]))
    _add(entry, "title", text.get("title") or statement["id"], type="text")
    _add(entry, "updated", local_stamp(published_at(statement), timezone))
    _add(entry, "link", rel="alternate", type="application/cap+xml",
         href=cap_url(base_url, statement["id"]))
    _add(entry, "link", rel="related", type="text/html", hreflang=text["language"],
         href=statement_url(base_url, statement["id"],
                            city.languages.query(text["language"])))
    _add(entry, "category", term=statement["msg_type"], scheme=f"{SCHEME}msg-type")
    _add(entry, "summary", summary(text.get("body", "")), type="text")


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """A child element (in the root's default namespace); text and attribute values are
    escaped when written."""
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = xml_safe(text)
    return child


def _bytes(feed: ET.Element) -> bytes:
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document
