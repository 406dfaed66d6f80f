"""The public subscribe form with double opt-in, and leaving through the web, against a real
stack: the web process, the worker's channel workers, the SMS sandbox and an SMTP server.
Driven like a browser (httpx with the session cookie, the CSRF token read from the form)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.subscribers.models import Subscriber
from tests.integration import registry_view
from tests.integration.factories import (
    audit_events,
    file_report,
    flood_body,
    link_in,
    mail_to,
    new_email,
    new_phone,
    sms_code,
)
from tests.integration.smtp_server import Inbox
from tests.integration.stack import Stack, wait_for
from tests.integration.webclient import csrf_of

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def fresh_limits(subscribe_stack: Stack) -> Iterator[None]:
    """Every test starts with the public form limit of 127.0.0.1 unused."""

    def reset() -> None:
        for key in subscribe_stack.redis.scan_iter(subscribe_stack.keys.rate_window("*", "*")):
            subscribe_stack.redis.delete(key)

    reset()
    yield
    reset()


# --- helpers ------------------------------------------------------------------------------

def browser(stack: Stack) -> httpx.Client:
    """A client that keeps its session cookie, like a browser tab (asks for HTML)."""
    return httpx.Client(base_url=stack.web_url, timeout=30, headers={"Accept": "text/html"})


def open_form(client: httpx.Client, path: str = "/subscribe?lang=en") -> str:
    """GET a form page (200 expected); the CSRF token it carries."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def subscribe(client: httpx.Client, **fields: Any) -> httpx.Response:
    """GET the form, then POST it with its CSRF token."""
    csrf = open_form(client)
    data = {"csrf": csrf, "language": "en", **fields}
    return client.post("/subscribe?lang=en", data=data)


def record(stack: Stack, contact: str) -> Subscriber | None:
    """The stored subscriber with this phone or email, if any."""
    sub_id = registry_view.id_by_contact(stack.redis, stack.keys, contact.lower())
    return registry_view.record(stack.redis, stack.keys, sub_id) if sub_id else None


def answered(stack: Stack, form: str, phone: str, **fields: Any
             ) -> tuple[int, str | None, int, str, str]:
    """What the sign-up (`form` '') or leave form ('/leave') answers for `phone`, then the
    code page and a guessed code: (status, where to, the guess's status, the code page, the
    guess's answer), the number and the session's CSRF token taken out, so that two numbers'
    answers compare."""
    def same(text: str) -> str:
        return re.sub(r'name="csrf" value="[^"]+"', "", text.replace(phone, "P"))

    with browser(stack) as client:
        csrf = open_form(client, f"/subscribe{form}?lang=en")
        posted = client.post(f"/subscribe{form}?lang=en", data={
            "csrf": csrf, "language": "en", **({"contact": phone} if form else {"phone": phone}),
            **fields})
        shown = client.get(f"/subscribe{form}/verify?lang=en").text
        guess = client.post(f"/subscribe{form}/verify?lang=en",
                            data={"csrf": csrf_of(shown), "code": "000000"})
    return (posted.status_code, posted.headers.get("location"), guess.status_code, same(shown),
            same(guess.text))


def is_active(stack: Stack, sub: Subscriber) -> bool:
    """Whether the subscriber is in the bitmap that statements are sent to."""
    return registry_view.is_active(stack.redis, stack.keys, sub.id)


def audit_actions(stack: Stack, actor: str) -> list[str]:
    """The actions of the audit events `actor` caused, oldest first."""
    return [e["action"] for e in audit_events(stack) if e["actor"] == actor]


def import_active(stack: Stack, tmp_path: Path, phone: str = "", email: str = "",
                  area: str = "hn-tay-ho") -> None:
    """Import one active subscriber of `area` with `loa subscribers import`."""
    channels = ";".join(c for c, given in (("sms", phone), ("email", email)) if given)
    path = tmp_path / "subs.csv"
    path.write_text(f"phone,email,language,areas,topics,channels\n"
                    f"{phone},{email},en,{area},,{channels}\n", encoding="utf-8")
    done = stack.subscribers("import", str(path))
    assert "1 saved" in done.stdout, done.stdout + done.stderr


# --- joining --------------------------------------------------------------------------------

def test_the_form_lists_the_areas_and_topics(subscribe_stack: Stack) -> None:
    """The form offers every area and topic, in English and in Vietnamese."""
    with browser(subscribe_stack) as client:
        page = client.get("/subscribe?lang=en")
        vi = client.get("/subscribe")
    assert page.status_code == 200
    assert 'value="hn"' in page.text and 'value="hn-ba-dinh-kim-ma"' in page.text
    assert 'name="topics" value="*"' in page.text and 'value="flood"' in page.text
    assert "Subscribe to official updates" in page.text
    assert "Đăng ký nhận thông tin chính thức" in vi.text


def test_email_double_opt_in(subscribe_stack: Stack, mail: tuple[int, Inbox]) -> None:
    """Pending (and in no active set) until the emailed link is POSTed; a GET of the link
    changes nothing; then active with the consent of the confirmation, audited."""
    _, inbox = mail
    address = new_email()
    with browser(subscribe_stack) as client:
        answer = subscribe(client, email=address, areas=["hn-ba-dinh", "hn-tay-ho"],
                           topics=["flood"])
    assert answer.status_code == 200, answer.text
    assert "We sent a confirmation link" in answer.text
    pending = record(subscribe_stack, address)
    assert pending is not None and pending.status == "pending"
    assert pending.consent_source == "web" and not is_active(subscribe_stack, pending)

    message = mail_to(inbox, address)
    assert str(message["Subject"]) == "[Loa] Confirm your subscription"
    link = link_in(message, "/subscribe/confirm/")
    with browser(subscribe_stack) as reader:  # the recipient's own browser, another session
        shown = reader.get(link)
        assert shown.status_code == 200 and "Confirm" in shown.text
        assert record(subscribe_stack, address).status == "pending"  # type: ignore[union-attr]
        assert reader.post(link, data={}).status_code == 403  # no CSRF token
        confirmed = reader.post(link, data={"csrf": csrf_of(shown.text)})
        assert confirmed.status_code == 200, confirmed.text
        assert "Confirmed" in confirmed.text
        again = reader.post(link, data={"csrf": csrf_of(shown.text)})
        assert again.status_code == 200 and "already confirmed" in again.text
        token = link.split("/confirm/")[1].split("?")[0]
        tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        forged = reader.get(link.replace(token, tampered))
        assert forged.status_code == 400
    active = record(subscribe_stack, address)
    assert active is not None and active.status == "active" and is_active(subscribe_stack, active)
    assert active.channels == ["email"] and active.topics == ["flood"]
    assert active.areas == ["hn-ba-dinh", "hn-tay-ho"] and active.language == "en"
    assert active.consent_source == "web" and active.consent_at > pending.consent_at
    assert audit_actions(subscribe_stack, active.id)[-2:] == ["subscriber.requested",
                                                         "subscriber.confirmed"]


def test_sms_code_opt_in(subscribe_stack: Stack) -> None:
    """The form leads to the code page; a wrong code is refused (tries counted), the right
    one activates the phone."""
    phone = new_phone()
    with browser(subscribe_stack) as client:
        answer = subscribe(client, phone=phone, areas=["hn-hoan-kiem"])
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/subscribe/verify")
        page = client.get(answer.headers["location"])
        assert page.status_code == 200 and phone in page.text
        code = sms_code(subscribe_stack, phone)
        pending = record(subscribe_stack, phone)
        assert pending is not None and pending.status == "pending"
        assert not is_active(subscribe_stack, pending)
        # the code is stored only as an HMAC
        stored = subscribe_stack.redis.hgetall(subscribe_stack.keys.optin_code("join", phone))
        assert stored and code not in json.dumps(stored)
        wrong = "000000" if code != "000000" else "111111"
        refused = client.post("/subscribe/verify?lang=en",
                              data={"csrf": csrf_of(page.text), "code": wrong})
        assert refused.status_code == 422 and "Wrong code; 4 tries left" in refused.text
        assert 'id="error-code"' in refused.text
        assert record(subscribe_stack, phone).status == "pending"  # type: ignore[union-attr]
        done = client.post("/subscribe/verify?lang=en",
                           data={"csrf": csrf_of(page.text), "code": code})
        assert done.status_code == 200, done.text
        assert "Confirmed" in done.text
    active = record(subscribe_stack, phone)
    assert active is not None and active.status == "active" and is_active(subscribe_stack, active)
    assert active.channels == ["sms"] and active.consent_source == "web"
    assert not subscribe_stack.redis.exists(subscribe_stack.keys.optin_code("join", phone))


def test_five_wrong_codes_end_the_code(subscribe_stack: Stack) -> None:
    """Five wrong SMS codes end the code: the right one is then refused too."""
    phone = new_phone()
    with browser(subscribe_stack) as client:
        answer = subscribe(client, phone=phone, areas=["hn-hoan-kiem"])
        page = client.get(answer.headers["location"])
        code = sms_code(subscribe_stack, phone)
        wrong = "000000" if code != "000000" else "111111"
        statuses = [client.post("/subscribe/verify?lang=en",  # the form's own action
                                data={"csrf": csrf_of(page.text), "code": wrong})
                    for _ in range(5)]
        assert [r.status_code for r in statuses] == [422] * 5
        assert "too many wrong tries" in statuses[-1].text
        late = client.post("/subscribe/verify", data={"csrf": csrf_of(page.text),
                                                      "code": code})
        assert late.status_code == 422
    assert record(subscribe_stack, phone).status == "pending"  # type: ignore[union-attr]


def test_phone_and_email_each_confirm_their_own_channel(subscribe_stack: Stack,
                                                       mail: tuple[int, Inbox]) -> None:
    """The SMS code activates only SMS; the email link later adds email."""
    _, inbox = mail
    phone, address = new_phone(), new_email()
    with browser(subscribe_stack) as client:
        answer = subscribe(client, phone=phone, email=address, areas=["hn-dong-da"])
        page = client.get(answer.headers["location"])
        assert address in page.text  # "the email is confirmed separately"
        client.post("/subscribe/verify", data={"csrf": csrf_of(page.text),
                                               "code": sms_code(subscribe_stack, phone)})
    sub = record(subscribe_stack, phone)
    assert sub is not None and sub.status == "active" and sub.channels == ["sms"]
    assert sub.email is None  # not proven yet
    link = link_in(mail_to(inbox, address), "/subscribe/confirm/")
    with browser(subscribe_stack) as reader:
        reader.post(link, data={"csrf": csrf_of(reader.get(link).text)})
    both = record(subscribe_stack, phone)
    assert both is not None and both.channels == ["sms", "email"] and both.email == address


def test_active_and_opted_out_subscribers_change_only_on_confirmation(
        subscribe_stack: Stack, tmp_path: Path) -> None:
    """An active subscriber is not downgraded by the form; one who opted out is not
    re-activated by it; the code does both."""
    phone = new_phone()
    import_active(subscribe_stack, tmp_path, phone=phone, area="hn-tay-ho")
    with browser(subscribe_stack) as client:
        answer = subscribe(client, phone=phone, areas=["hn-cau-giay"])
        assert answer.status_code == 303
        still = record(subscribe_stack, phone)
        assert still is not None and still.status == "active" and is_active(subscribe_stack, still)
        assert still.areas == ["hn-tay-ho"]
        page = client.get(answer.headers["location"])
        client.post("/subscribe/verify", data={"csrf": csrf_of(page.text),
                                               "code": sms_code(subscribe_stack, phone)})
    moved = record(subscribe_stack, phone)
    assert moved is not None and moved.status == "active" and moved.areas == ["hn-cau-giay"]

    assert subscribe_stack.subscribers("import", str(_opted_out_csv(tmp_path, phone))
                         ).returncode == 0
    assert record(subscribe_stack, phone).status == "opted_out"  # type: ignore[union-attr]
    with browser(subscribe_stack) as client:
        answer = subscribe(client, phone=phone, areas=["hn-tay-ho"])
        out = record(subscribe_stack, phone)
        assert out is not None and out.status == "opted_out" and not is_active(subscribe_stack, out)
        page = client.get(answer.headers["location"])
        client.post("/subscribe/verify", data={"csrf": csrf_of(page.text),
                                               "code": sms_code(subscribe_stack, phone, 2)})
    back = record(subscribe_stack, phone)
    assert back is not None and back.status == "active" and is_active(subscribe_stack, back)


def _opted_out_csv(tmp_path: Path, phone: str) -> Path:
    path = tmp_path / "out.csv"
    path.write_text(f"phone,email,language,areas,topics,channels,status\n"
                    f"{phone},,en,hn-cau-giay,,sms,opted_out\n", encoding="utf-8")
    return path


def test_a_pending_subscriber_gets_nothing_from_a_statement(subscribe_stack: Stack) -> None:
    """A flood statement for Cau Giay reaches the confirmed phone, not the pending one."""
    confirmed, pending = new_phone(), new_phone()
    with browser(subscribe_stack) as client:
        answer = subscribe(client, phone=confirmed, areas=["hn-cau-giay"], topics=["flood"])
        page = client.get(answer.headers["location"])
        client.post("/subscribe/verify", data={"csrf": csrf_of(page.text),
                                               "code": sms_code(subscribe_stack, confirmed)})
    with browser(subscribe_stack) as client:
        subscribe(client, phone=pending, areas=["hn-cau-giay"], topics=["flood"])
        sms_code(subscribe_stack, pending)  # the code came; it is never typed
    incident_id = file_report(subscribe_stack, flood_body("hn-cau-giay", title="Ngập"))
    done = subscribe_stack.cli("approve", f"APR-{incident_id[4:]}-1",
                         *subscribe_stack.as_person("nguyen-van-an"))
    assert done.returncode == 0, done.stderr
    statement_id = f"STM-{incident_id[4:]}-1"
    wait_for(lambda: len(subscribe_stack.sms_sent(to=confirmed)) >= 2, 30, "the statement SMS")
    wait_for(lambda: subscribe_stack.redis.hget(subscribe_stack.keys.dispatch(statement_id),
                                          "queued_all"), 30, "fan-out done")
    assert f"/s/{statement_id}" in subscribe_stack.sms_sent(to=confirmed)[-1]["body"]
    assert len(subscribe_stack.sms_sent(to=pending)) == 1  # the code only


# --- the form's problems --------------------------------------------------------------------

def test_bad_input_comes_back_by_field_with_what_was_typed(subscribe_stack: Stack) -> None:
    """Bad input answers 422 with an error per field and what was typed, escaped."""
    with browser(subscribe_stack) as client:
        bad_phone = subscribe(client, phone="<b>not-a-phone</b>", email="ok@mail.example",
                              areas=["hn-tay-ho"], topics=["flood"])
        assert bad_phone.status_code == 422
        assert 'id="error-phone"' in bad_phone.text
        assert "not a valid phone number" in bad_phone.text
        assert 'value="&lt;b&gt;not-a-phone&lt;/b&gt;"' in bad_phone.text
        assert "<b>not-a-phone" not in bad_phone.text
        assert 'value="ok@mail.example"' in bad_phone.text
        assert re.search(r'value="hn-tay-ho"\s+selected', bad_phone.text)
        assert re.search(r'value="flood"\s+checked', bad_phone.text)
        assert not re.search(r'value="\*"\s+checked', bad_phone.text)

        no_contact = subscribe(client, areas=["hn-tay-ho"])
        assert no_contact.status_code == 422 and 'id="error-contact"' in no_contact.text
        assert "Give a phone number or an email address" in no_contact.text

        unknown = subscribe(client, email="ok@mail.example", areas=["hn-atlantis"])
        assert unknown.status_code == 422 and 'id="error-areas"' in unknown.text
        assert "Unknown area: hn-atlantis" in unknown.text
        assert 'value="ok@mail.example"' in unknown.text

        bad_email = subscribe(client, email="nobody@", areas=["hn"])
        assert bad_email.status_code == 422 and 'id="error-email"' in bad_email.text
        assert 'value="nobody@"' in bad_email.text
    assert record(subscribe_stack, "ok@mail.example") is None  # nothing was saved


def test_a_phone_that_sent_stop_gets_no_code_and_the_form_does_not_say_so(
        subscribe_stack: Stack) -> None:
    """The carrier-level STOP stays in force: no code is sent until the phone says START.
    The form answers as for any number (whether a number sent STOP is nobody's business),
    and the code page tells everyone what to do if no code comes."""
    stopped, fresh = new_phone(), new_phone()
    subscribe_stack.sms_reply(stopped, "STOP")
    told = len(subscribe_stack.sms_sent(to=stopped))  # what STOP answers
    answers = [answered(subscribe_stack, "", phone, areas=["hn"]) for phone in (stopped, fresh)]
    assert answers[0] == answers[1]
    assert answers[0][:3] == (303, "/subscribe/verify?lang=en", 422)
    assert ("unless it once texted STOP to us: then text START to us first, and start again"
            in answers[0][3] and "Wrong code; 4 tries left." in answers[0][4])
    assert record(subscribe_stack, stopped) is None
    sms_code(subscribe_stack, fresh)  # the fresh number's code came: the stopped one got none
    assert len(subscribe_stack.sms_sent(to=stopped)) == told


def test_leaving_by_phone_tells_nobody_who_is_subscribed(subscribe_stack: Stack,
                                                         tmp_path: Path) -> None:
    """A subscribed number is sent a code, a stranger's is not; a code guessed for either
    gets the same answer ("wrong code, N tries left"), never one that says no code waits."""
    member, stranger = new_phone(), new_phone()
    import_active(subscribe_stack, tmp_path, phone=member)
    answers = [answered(subscribe_stack, "/leave", phone) for phone in (member, stranger)]
    assert answers[0] == answers[1] and "Wrong code; 4 tries left." in answers[0][4]
    sms_code(subscribe_stack, member)  # the member's code came: the stranger got none
    assert subscribe_stack.sms_sent(to=stranger) == []


def test_a_post_without_the_csrf_token_is_refused(subscribe_stack: Stack) -> None:
    """Posts without this session's CSRF token are refused with 403; nothing saved."""
    address = new_email()
    with browser(subscribe_stack) as client:
        open_form(client)
        missing = client.post("/subscribe", data={"email": address, "areas": ["hn"]})
        wrong = client.post("/subscribe", data={"csrf": "forged", "email": address,
                                                "areas": ["hn"]})
    with browser(subscribe_stack) as other:  # a token from another session is no good either
        token = open_form(other)
    with browser(subscribe_stack) as client:
        open_form(client)
        foreign = client.post("/subscribe", data={"csrf": token, "email": address,
                                                  "areas": ["hn"]})
        leave = client.post("/subscribe/leave", data={"contact": address})
        verify = client.post("/subscribe/verify", data={"code": "123456"})
    assert [r.status_code for r in (missing, wrong, foreign, leave, verify)] == [403] * 5
    assert record(subscribe_stack, address) is None


def test_the_public_form_is_rate_limited(subscribe_stack: Stack) -> None:
    """The 21st post of the form in a window answers 429 with a Retry-After."""
    with browser(subscribe_stack) as client:
        csrf = open_form(client)
        answers = [client.post("/subscribe", data={"csrf": csrf, "areas": ["hn"]})
                   for _ in range(21)]
    assert [a.status_code for a in answers[:20]] == [422] * 20
    assert answers[20].status_code == 429
    assert "too many attempts" in answers[20].text
    # (the HTML error page of app.py drops the header; an API-style client gets it)
    with httpx.Client(base_url=subscribe_stack.web_url, timeout=30) as api_client:
        api_csrf = csrf_of(api_client.get("/subscribe").text)
        limited = api_client.post("/subscribe", data={"csrf": api_csrf, "areas": ["hn"]})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0


# --- leaving --------------------------------------------------------------------------------

def test_leaving_by_email_sends_the_unsubscribe_link(
        subscribe_stack: Stack, mail: tuple[int, Inbox], tmp_path: Path) -> None:
    """Leaving by email mails the unsubscribe link and answers strangers alike."""
    _, inbox = mail
    address = new_email()
    import_active(subscribe_stack, tmp_path, email=address)
    with browser(subscribe_stack) as client:
        csrf = open_form(client, "/subscribe/leave?lang=en")
        answer = client.post("/subscribe/leave?lang=en", data={"csrf": csrf,
                                                                "contact": address})
        stranger = client.post("/subscribe/leave?lang=en",
                               data={"csrf": csrf, "contact": new_email()})
        bad = client.post("/subscribe/leave?lang=en", data={"csrf": csrf, "contact": "x@"})
    assert answer.status_code == 200 and "we sent it a link to unsubscribe" in answer.text
    assert stranger.status_code == 200  # the same answer: nobody learns who subscribes
    assert bad.status_code == 422 and 'id="error-contact"' in bad.text
    assert 'value="x@"' in bad.text
    link = link_in(mail_to(inbox, address), "/unsubscribe/")
    assert record(subscribe_stack, address).status == "active"  # type: ignore[union-attr]
    assert httpx.post(link).status_code == 200  # the existing one-click unsubscribe
    gone = record(subscribe_stack, address)
    assert gone is not None and gone.status == "opted_out" and not is_active(subscribe_stack, gone)


def test_leaving_by_phone_with_a_code(subscribe_stack: Stack, tmp_path: Path) -> None:
    """Leaving by phone takes the SMS code: a wrong one keeps the subscription."""
    phone = new_phone()
    import_active(subscribe_stack, tmp_path, phone=phone)
    with browser(subscribe_stack) as client:
        csrf = open_form(client, "/subscribe/leave?lang=en")
        answer = client.post("/subscribe/leave?lang=en", data={"csrf": csrf,
                                                                "contact": phone})
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/subscribe/leave/verify")
        page = client.get(answer.headers["location"])
        assert page.status_code == 200
        code = sms_code(subscribe_stack, phone)
        assert "stop" in subscribe_stack.sms_sent(to=phone)[0]["body"]
        wrong = "000000" if code != "000000" else "111111"
        refused = client.post("/subscribe/leave/verify",
                              data={"csrf": csrf_of(page.text), "code": wrong})
        assert refused.status_code == 422
        assert record(subscribe_stack, phone).status == "active"  # type: ignore[union-attr]
        done = client.post("/subscribe/leave/verify?lang=en",
                           data={"csrf": csrf_of(page.text), "code": code})
        assert done.status_code == 200 and "will receive no more" in done.text
    gone = record(subscribe_stack, phone)
    assert gone is not None and gone.status == "opted_out" and not is_active(subscribe_stack, gone)
    assert audit_actions(subscribe_stack, gone.id)[-1] == "subscriber.opted_out"
