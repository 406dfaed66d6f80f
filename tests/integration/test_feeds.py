"""The public feeds over HTTP on a real stack: /feed.atom, /cap.xml, /cap/{id}.xml."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from tests.feed_schemas import NS, schema, xml_text
from tests.integration.factories import post_report, report_body, wait_for_approval
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

AREA = "hn-nam-tu-liem-dai-mo"  # used by no other test: nothing else joins our incident


@pytest.fixture(scope="module")
def published(stack: Stack) -> dict[str, Any]:
    """A flood statement for AREA, approved and published; its title has a script tag."""
    body = report_body(AREA)
    body["title"] = f"<script>alert(1)</script> Ngập {uuid.uuid4().hex[:6]}"
    report_id = post_report(stack, body)
    incident_id, approval = wait_for_approval(stack, report_id)
    done = stack.cli("approve", approval["id"], *stack.as_person(approval["approvers"][0]))
    assert done.returncode == 0, done.stderr
    stack.wait_for_status(incident_id, "published")
    with stack.http() as http:
        statement: dict[str, Any] = http.get(
            f"/api/statements/STM-{incident_id[4:]}-1").json()
    return statement


def web_title(statement: dict[str, Any], lang: str) -> str:
    """The web title of a statement in language `lang`."""
    found: str = next(t["title"] for t in statement["texts"]
                      if t["channel"] == "web" and t["language"] == lang)
    return found


def test_the_cap_alert_of_a_published_statement(stack: Stack, published: dict[str, Any]
                                                ) -> None:
    """`/cap/{id}.xml`: CAP 1.2 valid against the OASIS schema, with the statement's values;
    the script tag of the title is text."""
    with stack.http() as http:
        answer = http.get(f"/cap/{published['id']}.xml")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/cap+xml"
    schema("CAP-v1.2.xsd").validate(answer.content)
    schema("cap12_extended.xsd").validate(answer.content)
    assert b"&lt;script&gt;" in answer.content and b"<script>" not in answer.content
    alert = ET.fromstring(answer.content)
    assert xml_text(alert, "cap:identifier") == published["id"]
    assert xml_text(alert, "cap:sender") == "loa@127.0.0.1"
    assert xml_text(alert, "cap:msgType") == "Alert"
    assert xml_text(alert, "cap:sent").endswith("+07:00") and "." not in xml_text(alert, "cap:sent")
    assert xml_text(alert, "cap:incidents") == published["incident_id"]
    infos = alert.findall("cap:info", NS)
    assert [xml_text(i, "cap:language") for i in infos] == ["vi-VN", "en-US", "fr", "th"]
    assert [xml_text(i, "cap:headline") for i in infos] == [
        web_title(published, lang) for lang in ("vi", "en", "fr", "th")]
    assert "<script>alert(1)</script>" in xml_text(infos[0], "cap:headline")
    assert [xml_text(i, "cap:area/cap:areaDesc") for i in infos] == [
        "Phường Đại Mỗ", "Dai Mo Ward", "Đại Mỗ", "Dai Mo Ward"]
    assert [(xml_text(g, "cap:valueName"), xml_text(g, "cap:value"))
            for g in infos[0].findall("cap:area/cap:geocode", NS)] == [("LOA", AREA)]
    assert (xml_text(infos[0], "cap:category"),
            xml_text(infos[0], "cap:severity")) == ("Met", "Severe")
    assert xml_text(infos[0], "cap:web") == f"{stack.web_url}/statements/{published['id']}"


def test_unknown_and_unpublished_ids_are_404(stack: Stack) -> None:
    """No CAP alert for a well-formed id that is no statement (a statement that is not
    published yet gets the same 404: the route checks `published_at`, as the statement page
    does); an id that is not an id at all is 422 before any lookup."""
    with stack.anonymous() as http:
        assert http.get("/cap/STM-nope-1.xml").status_code == 422
        assert http.get("/cap/STM-abcdef12-1.xml").status_code == 422
        assert http.get("/cap/STM-99999999-9.xml").status_code == 404


def test_the_atom_feed_lists_the_statement(stack: Stack, published: dict[str, Any]) -> None:
    """`/feed.atom` in each language: valid Atom with the statement's entry, newest first."""
    for lang in ("vi", "en", "fr", "th"):
        with stack.http() as http:
            answer = http.get("/feed.atom", params={"lang": lang})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
        schema("atom.xsd").validate(answer.content)
        assert b"<script>" not in answer.content
        feed = ET.fromstring(answer.content)
        entries = {xml_text(e, "a:id"): e for e in feed.findall("a:entry", NS)}
        mine = entries[f"{stack.web_url}/statements/{published['id']}"]
        assert xml_text(mine, "a:title") == web_title(published, lang)
        assert xml_text(mine, "a:updated").endswith("+07:00")
        stamps = [xml_text(e, "a:updated") for e in feed.findall("a:entry", NS)]
        assert stamps == sorted(stamps, reverse=True)  # one offset: text order = time order
    with stack.http() as http:
        refused = http.get("/feed.atom", params={"lang": "es"})  # not a language of the city
    assert refused.status_code == 422 and "lang: 'es'" in refused.text


def test_the_cap_index_links_the_alert(stack: Stack, published: dict[str, Any]) -> None:
    """`/cap.xml`: an Atom index whose entry for the statement links to its CAP alert,
    and that link serves it."""
    with stack.http() as http:
        answer = http.get("/cap.xml")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
        schema("atom.xsd").validate(answer.content)
        index = ET.fromstring(answer.content)
        links = [e.find("a:link[@rel='alternate']", NS) for e in index.findall("a:entry", NS)]
        hrefs = {link.get("href"): link.get("type") for link in links if link is not None}
        href = f"{stack.web_url}/cap/{published['id']}.xml"
        assert hrefs[href] == "application/cap+xml"
        linked = http.get(href.removeprefix(stack.web_url))
    assert linked.status_code == 200
    schema("CAP-v1.2.xsd").validate(linked.content)
