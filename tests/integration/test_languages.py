"""Every language the city declares, on a real stack (web, worker, SMS sandbox, SMTP): a
French reader subscribes, confirms and leaves in French and gets the French statement; a
reader of a language a statement lacks gets their fallback; JOIN by SMS in French; the
feeds and the public page carry every language version."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from tests.feed_schemas import NS, schema, xml_text
from tests.integration.factories import (
    approve_a_flood,
    file_report,
    link_in,
    mail_to,
    new_email,
    new_phone,
    text_of,
)
from tests.integration.smtp_server import Inbox
from tests.integration.stack import Stack, wait_for
from tests.integration.webclient import csrf_of

pytestmark = pytest.mark.integration


def browser(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.web_url, timeout=30, headers={"Accept": "text/html"})


def sms_to(stack: Stack, phone: str, containing: str) -> str:
    """The body of the SMS to `phone` that contains `containing` (waits for it)."""
    found = wait_for(lambda: [m["body"] for m in stack.sms_sent(to=phone)
                              if containing in m["body"]], 60, f"an SMS to {phone}")
    return str(found[-1])


def test_a_french_reader_subscribes_confirms_reads_and_leaves_in_french(
        subscribe_stack: Stack, mail: tuple[int, Inbox]) -> None:
    """The form, its answers, the confirmation email and page, the statement email and the
    unsubscribe page: all in French for a reader who chose French."""
    _, inbox = mail
    address = new_email()
    with browser(subscribe_stack) as client:
        form = client.get("/subscribe?lang=fr")
        assert form.status_code == 200
        assert '<html lang="fr" dir="ltr">' in form.text
        assert "S&#39;inscrire aux informations officielles" in form.text
        for code, name in (("vi", "Tiếng Việt"), ("en", "English"), ("fr", "Français"),
                           ("th", "ไทย")):
            assert f'<option value="{code}" lang="{code}"' in form.text and name in form.text
        bad = client.post("/subscribe?lang=fr", data={
            "csrf": csrf_of(form.text), "language": "fr", "areas": ["hn-tay-ho-buoi"]})
        assert bad.status_code == 422
        assert "Indiquez un numéro de téléphone ou une adresse e-mail." in bad.text
        answer = client.post("/subscribe?lang=fr", data={
            "csrf": csrf_of(form.text), "email": address, "language": "fr",
            "areas": ["hn-tay-ho-buoi"], "topics": ["flood"]})
    assert answer.status_code == 200, answer.text
    assert "Consultez votre messagerie" in answer.text

    confirmation = mail_to(inbox, address)
    assert str(confirmation["Subject"]) == "[Loa] Confirmez votre inscription"
    link = link_in(confirmation, "/subscribe/confirm/")
    assert link.endswith("?lang=fr")
    with browser(subscribe_stack) as reader:
        shown = reader.get(link)
        assert shown.status_code == 200 and '<html lang="fr"' in shown.text
        done = reader.post(link, data={"csrf": csrf_of(shown.text)})
    assert done.status_code == 200 and "Inscription confirmée" in done.text

    _, statement_id = approve_a_flood(subscribe_stack, "hn-tay-ho-buoi", "Ngập sâu đường Âu Cơ")
    message = wait_for(lambda: [m for m in inbox.messages if str(m["To"]) == address
                                and statement_id in text_of(m)], 60, "the statement email")[0]
    assert str(message["Subject"]).startswith("[Loa Hanoï] Alerte fortes pluies et inondations")
    assert message["Content-Language"] == "fr"
    assert "Consignes à la population" in text_of(message)
    unsubscribe = str(message["List-Unsubscribe"]).strip("<>")
    assert unsubscribe.endswith("?lang=fr")
    asked = httpx.get(unsubscribe)
    assert asked.status_code == 200 and '<html lang="fr"' in asked.text
    assert "Ne plus recevoir les informations de Loa" in asked.text
    left = httpx.post(unsubscribe)
    assert left.status_code == 200 and "désinscription" in left.text


def test_each_reader_gets_their_language_or_its_fallback(subscribe_stack: Stack,
                                                          tmp_path: Path) -> None:
    """Imported readers of four languages: the flood statement (in all four) reaches each
    in their own; the collapse statement (Vietnamese and English only) reaches the French
    and Thai readers in English, their fallback. A language the city does not declare is
    refused at import, naming the row."""
    phones = {lang: new_phone() for lang in ("vi", "en", "fr", "th")}
    rows = [f"{p},,{lang},hn-tay-ho-nhat-tan,,sms" for lang, p in phones.items()]
    csv = tmp_path / "readers.csv"
    csv.write_text("phone,email,language,areas,topics,channels\n" + "\n".join(rows)
                   + f"\n{new_phone()},,es,hn-tay-ho-nhat-tan,,sms\n", encoding="utf-8")
    imported = subscribe_stack.subscribers("import", str(csv))
    assert "4 saved" in imported.stdout, imported.stdout + imported.stderr
    assert "readers.csv:6: language: 'es' is not one of the city's languages (vi, en, fr, th)" in (
        imported.stdout + imported.stderr)

    _, flood = approve_a_flood(subscribe_stack, "hn-tay-ho-nhat-tan", "Ngập sâu đường Nhật Chiêu")
    assert sms_to(subscribe_stack, phones["vi"], flood).startswith("[Loa Hà Nội] Ngập úng")
    assert sms_to(subscribe_stack, phones["en"], flood).startswith("[Loa Hanoi] Flood warning")
    assert sms_to(subscribe_stack, phones["fr"], flood).startswith("[Loa Hanoï] Alerte inondation")
    assert sms_to(subscribe_stack, phones["th"], flood).startswith("[Loa ฮานอย] เตือนภัยน้ำท่วม")

    incident_id = file_report(subscribe_stack, {"kind": "collapse", "severity": "severe",
                                           "area": "hn-tay-ho-nhat-tan",
                                           "title": "Sập tường rào"})
    assert subscribe_stack.cli("approve", f"APR-{incident_id[4:]}-1",
                          *subscribe_stack.as_person("ngo-van-hung")).returncode == 0
    collapse = f"STM-{incident_id[4:]}-1"
    english = sms_to(subscribe_stack, phones["en"], collapse)
    assert sms_to(subscribe_stack, phones["fr"], collapse) == english
    assert sms_to(subscribe_stack, phones["th"], collapse) == english
    assert sms_to(subscribe_stack, phones["vi"], collapse) != english


def test_joining_by_sms_in_french_answers_and_subscribes_in_french(
        subscribe_stack: Stack) -> None:
    phone = new_phone()
    national = "0" + phone.removeprefix("+84")
    answer = subscribe_stack.sms_reply(national, "Inscrire hn-tay-ho-tu-lien")["body"]
    assert ("<Message>Inscription aux informations de Loa pour Tứ Liên enregistrée ; "
            "répondez STOP pour vous désinscrire.</Message>") in answer
    unknown = subscribe_stack.sms_reply(national, "INSCRIRE hn-atlantis")["body"]
    assert ("<Message>Envoyez INSCRIRE &lt;code de zone&gt;, par exemple INSCRIRE hn-ba-dinh. "
            "Codes de zone inconnus : hn-atlantis</Message>") in unknown
    exported = subscribe_stack.subscribers("export").stdout
    assert any(line.startswith(f"{phone},,fr,hn-tay-ho-tu-lien,*,sms,resident,active")
               for line in exported.splitlines()), exported


def test_the_feeds_and_the_public_page_carry_every_language(subscribe_stack: Stack) -> None:
    """CAP: one <info> per language with its tag, valid against OASIS's schema; Atom in
    French links each language's page; the public page in Thai; an undeclared `?lang=` of
    a feed is refused naming the field."""
    incident_id, statement_id = approve_a_flood(subscribe_stack, "hn-tay-ho",
                                                "Ngập sâu Lạc Long Quân")
    subscribe_stack.wait_for_status(incident_id, "published")
    with subscribe_stack.http() as http:
        alert = http.get(f"/cap/{statement_id}.xml")
        atom = http.get("/feed.atom?lang=fr")
        refused = http.get("/feed.atom?lang=es")
        page = http.get("/?lang=th", headers={"Accept": "text/html"})
    schema("CAP-v1.2.xsd").validate(alert.content)
    infos = ET.fromstring(alert.content).findall("cap:info", NS)
    assert [xml_text(i, "cap:language") for i in infos] == ["vi-VN", "en-US", "fr", "th"]
    assert xml_text(infos[2], "cap:headline").startswith("Alerte fortes pluies")
    assert xml_text(infos[2], "cap:web").endswith(f"/statements/{statement_id}?lang=fr")
    assert xml_text(infos[3], "cap:area/cap:areaDesc") == "Tay Ho District"

    schema("atom.xsd").validate(atom.content)
    feed = ET.fromstring(atom.content)
    assert xml_text(feed, "a:title") == "Loa\u00a0: communiqués officiels"
    entry = next(e for e in feed.findall("a:entry", NS)
                 if xml_text(e, "a:id").endswith(statement_id))
    assert xml_text(entry, "a:title").startswith("Alerte fortes pluies")
    assert [link.get("hreflang") for link in entry.findall("a:link[@rel='alternate']", NS)
            ] == ["fr", "vi", "en", "th"]
    assert refused.status_code == 422 and "lang" in refused.text

    assert page.status_code == 200 and '<html lang="th" dir="ltr">' in page.text
    assert 'aria-current="true">ไทย</a>' in page.text
    assert "ประกาศเตือนภัยฝนตกหนัก" in page.text
