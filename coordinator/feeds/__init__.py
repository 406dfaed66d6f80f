"""Machine-readable feeds of published statements: Atom 1.0 and OASIS CAP 1.2.

The builders here are pure: they take statement dicts (as
:func:`coordinator.queries.statement_detail` returns them), the City, the public base
URL and the timezone, and return the XML document as bytes. The web routes that serve
them live in :mod:`coordinator.web.feeds`.

XML is built with :mod:`xml.etree.ElementTree`, so every piece of statement text is
escaped as character data and can never turn into markup.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

ATOM_NS = "http://www.w3.org/2005/Atom"
CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
CAP_TYPE = "application/cap+xml"


def parse_stamp(value: str) -> datetime:
    """An ISO 8601 timestamp as an aware datetime (a naive one is taken as UTC)."""
    stamp = datetime.fromisoformat(value)
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def published_at(statement: dict[str, Any]) -> datetime:
    """When the statement was published."""
    return parse_stamp(statement["published_at"])


def local_stamp(moment: datetime, timezone: str) -> str:
    """`YYYY-MM-DDThh:mm:ss+hh:mm` in `timezone`: whole seconds, explicit offset (never Z),
    the form CAP 1.2 requires and Atom accepts."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(ZoneInfo(timezone)).replace(microsecond=0).isoformat()


def statement_url(base_url: str, statement_id: str, lang: str = "") -> str:
    """The statement's public page (in the city's language unless `lang` is given)."""
    url = f"{base_url.rstrip('/')}/statements/{statement_id}"
    return f"{url}?lang={lang}" if lang else url


def cap_url(base_url: str, statement_id: str) -> str:
    """Where the statement's CAP 1.2 alert is served."""
    return f"{base_url.rstrip('/')}/cap/{statement_id}.xml"


def web_text(statement: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """The statement's web text in the first language of `order` it has (a reader's
    language and its fallbacks, ``Languages.order``), else its first one."""
    web = {t["language"]: t for t in statement["texts"] if t["channel"] == "web"}
    found = next((web[lang] for lang in order if lang in web), None)
    if found is None and web:
        found = next(iter(web.values()))
    return dict(found) if found else {"language": order[0], "title": statement["id"],
                                      "body": ""}


def web_languages(statement: dict[str, Any]) -> list[str]:
    """The languages the statement has a web text in, in the order of its texts."""
    found: list[str] = []
    for text in statement["texts"]:
        if text["channel"] == "web" and text["language"] not in found:
            found.append(text["language"])
    return found


# What XML 1.0 cannot carry at all (not even escaped): most C0 controls, surrogates,
# U+FFFE/U+FFFF. A report pasted from a word processor may hold a vertical tab.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """`text` without the characters XML 1.0 forbids (each becomes a space)."""
    return _NOT_XML.sub(" ", text)
