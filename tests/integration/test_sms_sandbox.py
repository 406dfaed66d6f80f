"""The SMS sandbox over real HTTP, driven by the real twilio SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from channels.twilio_http import twilio_client
from coordinator.embedded import free_port
from sandbox.gsm7 import num_segments
from sandbox.sms import SmsSandbox
from tests.integration.server_thread import ServerThread

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "sandbox-token-0123456789abcdef"
SENDER = "+15005550006"
SERVICE = "MG" + "fedcba9876543210" * 2
SCHEMA = json.loads((Path(__file__).parents[1] / "fixtures" / "twilio_message_schema.json")
                    .read_text(encoding="utf-8"))
TWIML = "<Response><Message>Received</Message></Response>"
# twilio 9.13's aiohttp client passes aiohttp.BasicAuth as `auth=`, both deprecated by
# aiohttp 3.14: the SDK's warnings, not ours, so only the async-SDK tests let them pass
@dataclass
class Receiver:
    """What the test webhook server was sent: (full URL, form, X-Twilio-Signature)."""

    url: str = ""
    hits: dict[str, list[tuple[str, dict[str, str], str]]] = field(default_factory=dict)
    failing: dict[str, int] = field(default_factory=dict)  # path -> 503s still to answer

    def wait(self, path: str, count: int, timeout_s: float = 5.0) -> list[dict[str, str]]:
        """The forms posted to `path`, once at least `count` arrived."""
        deadline = time.monotonic() + timeout_s
        while len(self.hits.get(path, [])) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return [form for _, form, _ in self.hits.get(path, [])]

    def signed(self, path: str) -> bool:
        """Whether every request to `path` carries a valid Twilio signature."""
        validator = RequestValidator(TOKEN)
        return all(validator.validate(url, form, sig) for url, form, sig in self.hits[path])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A tiny webhook server recording every POST it gets."""
    got = Receiver()
    app = FastAPI()

    @app.post("/{name}")
    async def hook(name: str, request: Request) -> PlainTextResponse:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        got.hits.setdefault(name, []).append(
            (str(request.url), form, request.headers.get("x-twilio-signature", "")))
        if got.failing.get(name, 0) > 0:
            got.failing[name] -= 1
            return PlainTextResponse("down", status_code=503)
        return PlainTextResponse(TWIML, media_type="application/xml")

    with ServerThread(app) as server:
        got.url = server.url
        yield got


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[SmsSandbox, str]]:
    """One sandbox served over HTTP for the whole module."""
    sandbox = SmsSandbox(SID, TOKEN, callback_delay_s=0.02)
    with ServerThread(sandbox.app) as server:
        yield sandbox, server.url


@pytest.fixture
def sandbox(running: tuple[SmsSandbox, str], receiver: Receiver) -> SmsSandbox:
    """The module's sandbox, emptied, with an empty receiver."""
    running[0].reset()
    receiver.hits.clear()
    receiver.failing.clear()
    return running[0]


@pytest.fixture
def url(running: tuple[SmsSandbox, str]) -> str:
    """The sandbox's base URL."""
    return running[1]


@pytest.fixture
def sync_client(url: str) -> Client:
    """A synchronous twilio Client aimed at the sandbox."""
    return twilio_client(SID, TOKEN, base_url=url, asynchronous=False)


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    """A raw HTTP client with the account's credentials."""
    with httpx.Client(base_url=url, auth=(SID, TOKEN)) as client:
        yield client


def create(api: httpx.Client, **form: str) -> httpx.Response:
    """POST a raw create request."""
    return api.post(f"/2010-04-01/Accounts/{SID}/Messages.json", data=form)


def test_sync_create_queues_and_stores(sandbox: SmsSandbox, sync_client: Client) -> None:
    """A create through the sync SDK comes back queued and lands in the outbox."""
    msg = sync_client.messages.create(to="+84901234567", from_=SENDER, body="Flood warning")
    assert msg.sid.startswith("SM") and len(msg.sid) == 34
    assert (msg.status, msg.direction, msg.num_segments, msg.api_version) == (
        "queued", "outbound-api", "1", "2010-04-01")
    assert msg.date_created is not None and msg.error_code is None
    assert [m["sid"] for m in sandbox.messages] == [msg.sid]


def test_create_answers_201_with_exactly_the_spec_fields(sandbox: SmsSandbox,
                                                         api: httpx.Client) -> None:
    """Create, fetch and list JSON carry exactly the names of Twilio's published spec."""
    made = create(api, To="+84901234567", From=SENDER, Body="hi")
    assert made.status_code == 201
    fetched = api.get(made.json()["uri"]).json()
    listed = api.get(f"/2010-04-01/Accounts/{SID}/Messages.json").json()
    assert set(made.json()) == set(fetched) == set(SCHEMA["message_properties"])
    assert set(listed) == {*SCHEMA["list_keys"], "messages"}
    assert made.json()["date_created"].endswith(" +0000")


async def test_async_fetch_and_list_filtered_by_to(sandbox: SmsSandbox, url: str) -> None:
    """The async SDK fetches a message by sid and lists only those to one number."""
    client = twilio_client(SID, TOKEN, base_url=url)
    try:
        first = await client.messages.create_async(to="+84901111111", from_=SENDER, body="a")
        await client.messages.create_async(to="+84902222222", from_=SENDER, body="b")
        fetched = await client.messages(first.sid).fetch_async()
        listed = await client.messages.list_async(to="+84901111111")
    finally:
        await client.http_client.close()
    assert (fetched.sid, fetched.body, fetched.to) == (first.sid, "a", "+84901111111")
    assert [m.sid for m in listed] == [first.sid]


def test_list_follows_pages(sandbox: SmsSandbox, sync_client: Client) -> None:
    """The SDK walks next_page_uri across pages and gets every message, newest first."""
    sids = [sync_client.messages.create(to="+84903333333", from_=SENDER, body=str(i)).sid
            for i in range(5)]
    assert [m.sid for m in sync_client.messages.list(page_size=2)] == sids[::-1]


def test_wrong_token_is_20003(sandbox: SmsSandbox, url: str) -> None:
    """A wrong auth token makes the SDK raise TwilioRestException 401 / 20003."""
    client = twilio_client(SID, "wrong", base_url=url, asynchronous=False)
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to="+84901234567", from_=SENDER, body="x")
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert sandbox.messages == []


def test_other_account_path_is_20404(sandbox: SmsSandbox, api: httpx.Client) -> None:
    """A path naming another account answers 404 / 20404."""
    reply = api.get("/2010-04-01/Accounts/AC" + "9" * 32 + "/Messages.json")
    assert (reply.status_code, reply.json()["code"]) == (404, 20404)


async def test_invalid_to_is_21211(sandbox: SmsSandbox, url: str) -> None:
    """A To that is not E.164 makes the async SDK raise 400 / 21211."""
    client = twilio_client(SID, TOKEN, base_url=url)
    try:
        with pytest.raises(TwilioRestException) as caught:
            await client.messages.create_async(to="0901234567", from_=SENDER, body="x")
    finally:
        await client.http_client.close()
    assert (caught.value.status, caught.value.code) == (400, 21211)


@pytest.mark.parametrize(("form", "code"), [
    ({"From": SENDER, "Body": "x"}, 21604),
    ({"To": "+84901234567", "From": SENDER}, 21602),
    ({"To": "+84901234567", "Body": "x"}, 21603),
    ({"To": "+84901234567", "From": SENDER, "Body": "x" * 1601}, 21617),
])
def test_validation_errors(sandbox: SmsSandbox, api: httpx.Client, form: dict[str, str],
                           code: int) -> None:
    """Each malformed create answers 400 with its Twilio error code and stores nothing."""
    reply = create(api, **form)
    assert (reply.status_code, reply.json()["code"], reply.json()["status"]) == (400, code, 400)
    assert reply.json()["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert sandbox.messages == []


def test_throttle_429_then_success(sandbox: SmsSandbox, sync_client: Client) -> None:
    """Throttled creates raise 429 / 20429 until the count runs out, then succeed."""
    sandbox.throttle(429, 2)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            sync_client.messages.create(to="+84901234567", from_=SENDER, body="x")
        assert (caught.value.status, caught.value.code) == (429, 20429)
    assert sync_client.messages.create(to="+84901234567", from_=SENDER, body="x").sid


def test_http_throttle_503(sandbox: SmsSandbox, api: httpx.Client) -> None:
    """POST /_sandbox/throttle makes the next create answer 503 / 20500."""
    assert api.post("/_sandbox/throttle", json={"status": 503, "count": 1}).status_code == 200
    assert api.post("/_sandbox/throttle", json={"status": 400, "count": 1}).status_code == 400
    assert create(api, To="+84901234567", From=SENDER, Body="x").json()["code"] == 20500
    assert create(api, To="+84901234567", From=SENDER, Body="x").status_code == 201


def send_with_callback(client: Client, receiver: Receiver, to: str,
                       service: bool = False) -> Any:
    """Create a message whose status callbacks go to the receiver's /status."""
    sender = {"messaging_service_sid": SERVICE} if service else {"from_": SENDER}
    return client.messages.create(to=to, body="Evacuate now", **sender,
                                  status_callback=f"{receiver.url}/status?tag=t1")


def test_callbacks_sent_then_delivered_signed(sandbox: SmsSandbox, sync_client: Client,
                                              receiver: Receiver, url: str) -> None:
    """A queued message posts signed callbacks sent then delivered, and fetch shows it;
    the sandbox's count says it is moving until its last callback is posted."""
    msg = send_with_callback(sync_client, receiver, "+84904444444")
    # this one (and maybe an earlier test's, whose statuses still move), unless it is done
    moving = httpx.get(f"{url}/_sandbox/count").json()["moving"]
    assert moving >= 1 or len(receiver.hits.get("status", [])) == 2
    forms = receiver.wait("status", 2)
    assert msg.status == "queued"
    assert [f["MessageStatus"] for f in forms] == ["sent", "delivered"]
    assert all(f["MessageSid"] == f["SmsSid"] == msg.sid and "ErrorCode" not in f
               for f in forms)
    assert {f["AccountSid"] for f in forms} == {SID} and forms[0]["From"] == SENDER
    assert receiver.signed("status")
    fetched = sync_client.messages(msg.sid).fetch()
    assert (fetched.status, fetched.price_unit) == ("delivered", "USD")
    assert fetched.date_sent is not None and fetched.price is not None
    deadline = time.monotonic() + 5
    while httpx.get(f"{url}/_sandbox/count").json()["moving"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert httpx.get(f"{url}/_sandbox/count").json() == {"messages": 1, "moving": 0}


def test_service_callbacks_queued_sent_delivered(sandbox: SmsSandbox, sync_client: Client,
                                                 receiver: Receiver) -> None:
    """A Messaging Service message starts accepted and posts queued, sent, delivered."""
    msg = send_with_callback(sync_client, receiver, "+84905555555", service=True)
    forms = receiver.wait("status", 3)
    assert (msg.status, msg.messaging_service_sid) == ("accepted", SERVICE)
    assert [f["MessageStatus"] for f in forms] == ["queued", "sent", "delivered"]
    assert receiver.signed("status")


def test_failing_number_is_undelivered(sandbox: SmsSandbox, sync_client: Client,
                                       receiver: Receiver) -> None:
    """A number failed with 30003 gets sent then undelivered with ErrorCode 30003."""
    sandbox.fail_number("+84906666666", 30003)
    msg = send_with_callback(sync_client, receiver, "+84906666666")
    forms = receiver.wait("status", 2)
    assert [(f["MessageStatus"], f.get("ErrorCode")) for f in forms] == [
        ("sent", None), ("undelivered", "30003")]
    fetched = sync_client.messages(msg.sid).fetch()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


def test_landline_code_fails_without_sent(sandbox: SmsSandbox, sync_client: Client,
                                          api: httpx.Client, receiver: Receiver) -> None:
    """A number failed with 30006 over HTTP goes straight to failed with ErrorCode 30006."""
    api.post("/_sandbox/fail", json={"number": "+84907777777", "error_code": 30006})
    send_with_callback(sync_client, receiver, "+84907777777")
    receiver.wait("status", 1)
    time.sleep(0.1)  # room for a wrong second callback to show up
    assert [(f["MessageStatus"], f.get("ErrorCode")) for f in receiver.wait("status", 1)] == [
        ("failed", "30006")]
    assert sandbox.messages[0]["error_message"] == "Landline or unreachable carrier"


def test_callback_target_down_still_delivers(sandbox: SmsSandbox, sync_client: Client) -> None:
    """A status callback nobody listens on is tolerated and the message still ends delivered."""
    msg = sync_client.messages.create(to="+84908888888", from_=SENDER, body="x",
                                      status_callback=f"http://127.0.0.1:{free_port()}/cb")
    until(lambda: sandbox.messages[0]["status"] == "delivered")
    assert sync_client.messages(msg.sid).fetch().status == "delivered"


def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for `condition`, failing the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_inbound_webhook_is_signed(sandbox: SmsSandbox, api: httpx.Client,
                                   receiver: Receiver) -> None:
    """POST /_sandbox/inbound forwards a Twilio-shaped, validly signed form to the webhook."""
    reply = api.post("/_sandbox/inbound", json={
        "from": "+84901234567", "to": SENDER, "body": "YES 4821", "url": f"{receiver.url}/sms"})
    assert reply.json() == {"status": 200, "body": TWIML, "attempts": 1}
    (form,) = receiver.wait("sms", 1)
    assert {k: form[k] for k in ("From", "To", "Body", "NumMedia", "NumSegments", "SmsStatus",
                                 "ApiVersion", "AccountSid")} == {
        "From": "+84901234567", "To": SENDER, "Body": "YES 4821", "NumMedia": "0",
        "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01",
        "AccountSid": SID}
    assert form["MessageSid"] == form["SmsSid"] and form["MessageSid"].startswith("SM")
    assert receiver.signed("sms")


def test_inbound_retries_a_5xx_when_the_url_asks(sandbox: SmsSandbox, api: httpx.Client,
                                                  receiver: Receiver) -> None:
    """`#rc=3&rp=all` on the webhook URL: two 503s, then 200; the same signed MessageSid
    each time, posted to the URL without its fragment."""
    receiver.failing["flaky"] = 2
    reply = api.post("/_sandbox/inbound", json={
        "from": "+84901234567", "to": SENDER, "body": "STOP",
        "url": f"{receiver.url}/flaky#rc=3&rp=all"})
    assert reply.json() == {"status": 200, "body": TWIML, "attempts": 3}
    forms = receiver.wait("flaky", 3)
    assert len({f["MessageSid"] for f in forms}) == 1
    assert {url for url, _, _ in receiver.hits["flaky"]} == {f"{receiver.url}/flaky"}
    assert receiver.signed("flaky")


def test_inbound_does_not_retry_a_5xx_by_default(sandbox: SmsSandbox, api: httpx.Client,
                                                 receiver: Receiver) -> None:
    """Without overrides (retry once, on a failed connection only) a 503 is final."""
    receiver.failing["flaky"] = 1
    reply = api.post("/_sandbox/inbound", json={
        "from": "+84901234567", "to": SENDER, "body": "STOP", "url": f"{receiver.url}/flaky"})
    assert reply.json() == {"status": 503, "body": "down", "attempts": 1}


def test_inbound_can_replay_a_message_sid(sandbox: SmsSandbox, api: httpx.Client,
                                          receiver: Receiver) -> None:
    """A given `sid` is sent as the MessageSid, as a Twilio retry would."""
    sid = "SM" + "ab" * 16
    api.post("/_sandbox/inbound", json={"from": "+84901234567", "to": SENDER, "body": "x",
                                        "url": f"{receiver.url}/sms", "sid": sid})
    assert receiver.wait("sms", 1)[0]["MessageSid"] == sid


@pytest.mark.parametrize("fragment", ["#rc=6", "#rp=sometimes"])
def test_invalid_overrides_are_refused(sandbox: SmsSandbox, api: httpx.Client,
                                       receiver: Receiver, fragment: str) -> None:
    """A retry count over 5 or an unknown policy is an error, and nothing is posted."""
    reply = api.post("/_sandbox/inbound", json={
        "from": "+84901234567", "to": SENDER, "body": "x", "url": f"{receiver.url}/sms{fragment}"})
    assert reply.status_code == 400 and "sms" not in receiver.hits


def test_outbox_filters_and_reset(sandbox: SmsSandbox, api: httpx.Client) -> None:
    """GET /_sandbox/messages lists the outbox, ?to= filters it, reset empties it."""
    for to in ("+84901000001", "+84901000002"):
        create(api, To=to, From=SENDER, Body="x")
    assert len(api.get("/_sandbox/messages").json()) == 2
    assert [m["to"] for m in api.get("/_sandbox/messages", params={"to": "+84901000002"}
                                     ).json()] == ["+84901000002"]
    api.post("/_sandbox/reset")
    assert api.get("/_sandbox/messages").json() == []


def test_date_sent_filters(sandbox: SmsSandbox, api: httpx.Client) -> None:
    """DateSent, DateSent< and DateSent> filter on the sent day, inclusively."""
    create(api, To="+84901000003", From=SENDER, Body="x")
    until(lambda: sandbox.messages[0]["date_sent"] is not None)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    path = f"/2010-04-01/Accounts/{SID}/Messages.json"
    for params, count in [({"DateSent": today}, 1), ({"DateSent<": today}, 1),
                          ({"DateSent>": today}, 1), ({"DateSent": "2001-01-01"}, 0),
                          ({"DateSent>": "2999-01-01"}, 0)]:
        assert len(api.get(path, params=params).json()["messages"]) == count, params


@pytest.mark.parametrize(("body", "parts"), [
    ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3), ("{" * 80, 1),
    ("{" * 81, 2), ("ả" * 70, 1), ("ả" * 71, 2), ("ả" * 134, 2), ("ả" * 135, 3)])
def test_num_segments(body: str, parts: int) -> None:
    """Segments count GSM-7 (escapes double) at 160/153 and UCS-2 at 70/67."""
    assert num_segments(body) == parts
