"""OASIS CAP 1.2 alerts of published statements, and which alerts are current.

One statement is one CAP ``<alert>``: identifier = the statement id, msgType = the
statement's (Alert, Update, Cancel), ``<references>`` = the earlier statements it replaces,
one ``<info>`` per language of its web texts, each with one ``<area>``.

Values chosen where the statement has no direct CAP counterpart:

- sender: ``loa@<host of the public base URL>`` (:func:`sender`), the same for every alert;
- severity -> urgency/severity/certainty: extreme -> Immediate/Extreme/Observed,
  severe -> Expected/Severe/Observed, moderate -> Expected/Moderate/Likely,
  minor -> Future/Minor/Likely;
- a Cancel keeps severity and certainty but has urgency Past ("responsive action is no
  longer required") and responseType AllClear; Alert and Update have responseType Monitor
  (follow the instructions in the text);
- category from the incident kind (:data:`CATEGORIES`; Other when unknown), event = the kind;
- ``<expires>``: the next update the statement promises (statements.promises), or, when it
  promises none, `valid_for_s` (``LOA_CAP_VALID_FOR_S``, a day) after it was sent; a
  statement is in force until it expires or a later statement of its incident replaces or
  cancels it (see :func:`current_alerts`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from coordinator.city import Area, City
from coordinator.feeds import (
    CAP_NS,
    local_stamp,
    parse_stamp,
    published_at,
    statement_url,
    web_languages,
    web_text,
    xml_safe,
)

CATEGORIES = {
    "flood": "Met", "fire": "Fire", "public-health": "Health", "utility-outage": "Infra",
    "infrastructure": "Infra", "misinformation": "Other",
}
GRADES = {  # statement severity -> (urgency, severity, certainty)
    "extreme": ("Immediate", "Extreme", "Observed"),
    "severe": ("Expected", "Severe", "Observed"),
    "moderate": ("Expected", "Moderate", "Likely"),
    "minor": ("Future", "Minor", "Likely"),
}
SENDER_NAME = "Loa"
GEOCODE_OWN = "LOA"  # valueName of the geocode that carries Loa's own area code


def sender(base_url: str) -> str:
    """The CAP sender of every alert: `loa@` the host of the public base URL."""
    return f"loa@{urlsplit(base_url).hostname or 'localhost'}"


def category(kind: str) -> str:
    """The CAP category of an incident kind (Other when there is no closer one)."""
    return CATEGORIES.get(kind, "Other")


def grades(statement: dict[str, Any]) -> tuple[str, str, str]:
    """(urgency, severity, certainty) of a statement; a Cancel's urgency is Past."""
    urgency, severity, certainty = GRADES.get(statement["severity"],
                                              ("Unknown", "Unknown", "Unknown"))
    if statement["msg_type"] == "Cancel":
        urgency = "Past"
    return urgency, severity, certainty


def references(statement: dict[str, Any], sent_of: Mapping[str, str], base_url: str,
               timezone: str) -> str:
    """CAP `<references>`: space-separated `sender,identifier,sent` of the statements this
    one refers to; those without a known publication time (`sent_of`) are left out."""
    triples = [f"{sender(base_url)},{ref},{local_stamp(parse_stamp(sent_of[ref]), timezone)}"
               for ref in statement.get("references") or [] if sent_of.get(ref)]
    return " ".join(triples)


DEFAULT_VALID_FOR_S = 86400.0


def expires_at(statement: dict[str, Any], valid_for_s: float = DEFAULT_VALID_FOR_S
               ) -> datetime:
    """When the statement's alert expires: `valid_for_s` after it was sent, or its promised
    next update if that is later. A promise never shortens it: an update that comes late
    must not take a warning still in force out of the feeds."""
    valid = published_at(statement) + timedelta(seconds=valid_for_s)
    promised = statement.get("next_update_by")
    return max(valid, parse_stamp(promised)) if promised else valid


def current_alerts(statements: Iterable[dict[str, Any]], now: datetime | None = None,
                   valid_for_s: float = DEFAULT_VALID_FOR_S) -> list[dict[str, Any]]:
    """The statements still in force, newest first: of each incident its newest published
    statement, unless that one cancels the incident's alert or (given `now`) has expired."""
    newest: dict[str, dict[str, Any]] = {}
    for statement in statements:
        if not statement.get("published_at"):
            continue
        held = newest.get(statement["incident_id"])
        if held is None or published_at(statement) > published_at(held):
            newest[statement["incident_id"]] = statement
    current = [s for s in newest.values() if s["msg_type"] != "Cancel"
               and (now is None or expires_at(s, valid_for_s) > now)]
    return sorted(current, key=published_at, reverse=True)


def cap_alert(statement: dict[str, Any], city: City, *, base_url: str, timezone: str,
              sent_of: Mapping[str, str] | None = None,
              valid_for_s: float = DEFAULT_VALID_FOR_S) -> bytes:
    """The CAP 1.2 `<alert>` of a published statement, as UTF-8 XML.

    `sent_of` maps the ids of the statements it references to their `published_at`.
    """
    alert = ET.Element("alert", xmlns=CAP_NS)
    _add(alert, "identifier", statement["id"])
    _add(alert, "sender", sender(base_url))
    _add(alert, "sent", local_stamp(published_at(statement), timezone))
    _add(alert, "status", "Exercise" if statement.get("exercise") else "Actual")
    _add(alert, "msgType", statement["msg_type"])
    _add(alert, "scope", "Public")
    refs = references(statement, sent_of or {}, base_url, timezone)
    if refs:
        _add(alert, "references", refs)
    _add(alert, "incidents", statement["incident_id"])
    expires = local_stamp(expires_at(statement, valid_for_s), timezone)
    for lang in web_languages(statement):
        _info(alert, statement, lang, city, base_url, expires)
    document: bytes = ET.tostring(alert, encoding="utf-8", xml_declaration=True)
    return document


def _info(alert: ET.Element, statement: dict[str, Any], lang: str, city: City,
          base_url: str, expires: str) -> None:
    """One `<info>` block: the statement in one language (element order as in the XSD)."""
    info = _add(alert, "info")
    _add(info, "language", city.languages.cap_tag(lang))
    _add(info, "category", category(statement["kind"]))
    _add(info, "event", statement["kind"])
    _add(info, "responseType", "AllClear" if statement["msg_type"] == "Cancel" else "Monitor")
    urgency, severity, certainty = grades(statement)
    _add(info, "urgency", urgency)
    _add(info, "severity", severity)
    _add(info, "certainty", certainty)
    _add(info, "expires", expires)
    _add(info, "senderName", SENDER_NAME)
    text = web_text(statement, [lang])
    _add(info, "headline", text.get("title") or statement["id"])
    _add(info, "description", text.get("body", ""))
    _add(info, "web", statement_url(base_url, statement["id"], city.languages.query(lang)))
    _area(info, statement["area"], city.known_areas.get(statement["area"]), lang)


def _area(info: ET.Element, code: str, area: Area | None, lang: str) -> None:
    """The `<area>`: its name in `lang`, Loa's own code, then any official codes."""
    block = _add(info, "area")
    _add(block, "areaDesc", area.name_in(lang) if area is not None else code)
    codes = [(GEOCODE_OWN, code), *(area.geocode if area is not None else ())]
    for name, value in codes:
        geocode = _add(block, "geocode")
        _add(geocode, "valueName", name)
        _add(geocode, "value", value)


def _add(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    """A child element (in the root's default namespace, CAP); `text` is escaped by
    ElementTree when written."""
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = xml_safe(text)
    return child
