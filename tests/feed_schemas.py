"""The official XML schemas of the public feeds (CAP 1.2, Atom) kept under tests/fixtures,
and reading one element's text by a namespaced path: shared by the unit tests of the feed
builders and the integration tests of the served feeds."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import xmlschema

SCHEMAS = Path(__file__).resolve().parent / "fixtures" / "schemas"
CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
NS = {"cap": CAP_NS, "a": ATOM_NS}


@cache
def schema(name: str) -> xmlschema.XMLSchema:
    """The schema file `name` of tests/fixtures/schemas, parsed once."""
    return xmlschema.XMLSchema(str(SCHEMAS / name))


def xml_text(parent: ET.Element, path: str) -> str:
    """The text of the element at `path` (prefixes `cap:` and `a:`) under `parent`; fails
    the test when there is none."""
    found = parent.find(path, NS)
    assert found is not None, path
    return found.text or ""
