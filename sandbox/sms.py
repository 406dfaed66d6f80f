"""SMS sandbox: a local, in-memory stand-in for Twilio's Messages API (2010-04-01).

The real `twilio` SDK can talk to it (as `channels.twilio_http.twilio_client(base_url=...)`):
same paths, Basic auth, JSON shapes and error JSON as api.twilio.com. Accepted messages move
through Twilio's statuses in the background, posting signed status callbacks.

Injected delivery failures (`fail_number`) end like this:
- 30006 (landline or unreachable carrier), 21610 (unsubscribed recipient) and 30034
  (unregistered sender): the carrier never takes the message, so `failed` with that ErrorCode
  and no `sent` before it;
- any other code (30003 unreachable handset, 30005 unknown handset, 30007 filtered, ...):
  `sent`, then `undelivered` with that ErrorCode.
A message created with MessagingServiceSid starts `accepted` and gets a `queued` callback first;
one created with From starts `queued`, for which (as on Twilio) no callback is sent.

Inbound SMS (`POST /_sandbox/inbound`) honour Twilio's connection overrides on the webhook URL
(`#rc=3&rp=all`: retry count 0-5, default 1; retry policy `4xx`, `5xx`, `ct` (connection
failed), `rt` (read timed out) or `all`, comma-separated, default `ct`): the fragment is
stripped, the URL without it is signed and posted, and a failure the policy names is retried
with the same MessageSid. Twilio documents no retry on 5xx without such an override.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import logging
import os
import secrets
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from twilio.request_validator import (  # type: ignore[import-untyped, unused-ignore]
    RequestValidator,  # twilio has no py.typed; unused-ignore: fine if an override covers it
)

from sandbox.gsm7 import num_segments
from sandbox.twilio_rules import (
    API_VERSION,
    LIST_FILTERS,
    FailRule,
    InboundSms,
    ThrottleRule,
    advance,
    failure_kind,
    matches,
    not_found,
    refusal,
    rfc2822,
    status_plan,
    twilio_error,
    webhook_overrides,
)

_log = logging.getLogger(__name__)


class SmsSandbox:
    """A Twilio Messages API for one account, all state in memory."""

    def __init__(self, account_sid: str, auth_token: str, callback_delay_s: float = 0.05) -> None:
        """Serve `account_sid`, accepting `auth_token`; statuses advance every callback_delay_s."""
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callback_delay_s = callback_delay_s
        self._http: httpx.AsyncClient | None = None
        # Off for throughput benchmarks: at thousands of messages per second the callbacks,
        # not the API, are what saturate a one-process sandbox.
        self.callbacks = True
        self.messages: list[dict[str, Any]] = []
        self._by_sid: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, int] = {}
        self._throttles: deque[int] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        # Callbacks wait here rather than in httpx's pool: its queue of waiting requests
        # costs time per waiter, which at thousands of messages saturated this process.
        self._callback_slots = asyncio.Semaphore(50)
        self._validator = RequestValidator(auth_token)
        self.app = FastAPI(title="Loa SMS sandbox", lifespan=self._lifespan)
        self._routes()

    def _routes(self) -> None:
        """Register Twilio's paths and the sandbox controls."""
        root = "/2010-04-01/Accounts/{account_sid}"
        add = self.app.add_api_route
        add(root + "/Messages.json", self._create, methods=["POST"])
        add(root + "/Messages.json", self._list, methods=["GET"])
        add(root + "/Messages/{sid}.json", self._fetch, methods=["GET"])
        add("/_sandbox/fail", self._http_fail, methods=["POST"])
        add("/_sandbox/throttle", self._http_throttle, methods=["POST"])
        add("/_sandbox/reset", self._http_reset, methods=["POST"])
        add("/_sandbox/messages", self._http_outbox, methods=["GET"])
        add("/_sandbox/count", self._http_count, methods=["GET"])
        add("/_sandbox/inbound", self._http_inbound, methods=["POST"])

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        """One HTTP client for every callback (making one per callback costs an SSL context
        each, which capped the sandbox near 30 messages/s); on shutdown, stop pending
        callbacks so no task outlives the server's loop."""
        self._http = httpx.AsyncClient(timeout=10.0)
        try:
            yield
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._http.aclose()
            self._http = None

    def fail_number(self, number: str, error_code: int) -> None:
        """Make later messages to `number` end failed/undelivered with `error_code`."""
        self._failures[number] = error_code

    def throttle(self, status: int, count: int) -> None:
        """Answer the next `count` create requests with `status` (429 or 5xx)."""
        if status != 429 and not 500 <= status <= 599:
            raise ValueError(f"throttle status must be 429 or 5xx, not {status}")
        self._throttles.extend([status] * count)

    def reset(self) -> None:
        """Forget every message, failure and throttle."""
        self.messages.clear()
        self._by_sid.clear()
        self._failures.clear()
        self._throttles.clear()

    def _guard(self, request: Request, account_sid: str) -> JSONResponse | None:
        """Twilio's 401 for bad credentials, 404 for another account; None when allowed."""
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            given = b""
        expected = f"{self.account_sid}:{self.auth_token}".encode()
        if scheme.lower() != "basic" or not secrets.compare_digest(given, expected):
            denied = twilio_error(401, 20003, "Authenticate")
            denied.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return denied
        if account_sid != self.account_sid:
            return not_found(request)
        return None

    async def _create(self, request: Request, account_sid: str) -> Response:
        """POST Messages.json: accept an outbound SMS (201) or answer Twilio's error."""
        if denied := self._guard(request, account_sid):
            return denied
        if self._throttles:
            status = self._throttles.popleft()
            if status == 429:
                return twilio_error(429, 20429, "Too Many Requests")
            return twilio_error(status, 20500, "Internal Server Error")
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if invalid := refusal(form):
            return invalid
        message = self._new_message(form)
        self.messages.append(message)
        self._by_sid[message["sid"]] = message
        self._spawn(self._lifecycle(message, form.get("StatusCallback"),
                                    self._failures.get(message["to"])))
        return JSONResponse(message, status_code=201)

    def _new_message(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The Message resource for a create request, with Twilio's field names."""
        sid = "SM" + secrets.token_hex(16)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        service = form.get("MessagingServiceSid") or None
        now = rfc2822()
        return {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": form["Body"],
            "date_created": now, "date_sent": None, "date_updated": now,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": form.get("From") or None, "messaging_service_sid": service,
            "num_media": "0",
            # as on Twilio, a service message has no sender, hence no segment count, until queued
            "num_segments": "0" if service else str(num_segments(form["Body"])),
            "price": None, "price_unit": "USD", "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": uri + "/Media.json", "feedback": uri + "/Feedback.json"},
            "to": form["To"], "uri": uri + ".json",
        }

    async def _fetch(self, request: Request, account_sid: str, sid: str) -> Response:
        """GET Messages/{Sid}.json: one message as it stands now."""
        if denied := self._guard(request, account_sid):
            return denied
        message = self._by_sid.get(sid)
        return JSONResponse(message) if message else not_found(request)

    async def _list(self, request: Request, account_sid: str) -> Response:
        """GET Messages.json: newest first, filtered, in Twilio's page shape."""
        if denied := self._guard(request, account_sid):
            return denied
        query = request.query_params
        try:
            size = min(max(int(query.get("PageSize", 50)), 1), 1000)
            page = max(int(query.get("Page", 0)), 0)
            found = [m for m in reversed(self.messages) if matches(m, query)]
        except ValueError:  # a number or a date that does not parse
            return twilio_error(400, 20001, "Invalid PageSize, Page or DateSent")
        start = page * size
        return JSONResponse(self._page(request, found[start:start + size], page, size,
                                       more=len(found) > start + size))

    def _page(self, request: Request, items: list[dict[str, Any]], page: int, size: int,
              more: bool) -> dict[str, Any]:
        """Twilio's list envelope around one page of messages."""
        filters = [(k, v) for k, v in request.query_params.items() if k in LIST_FILTERS]

        def uri(number: int) -> str:
            return f"{request.url.path}?" + urlencode(
                [*filters, ("PageSize", size), ("Page", number)])

        start = page * size
        return {"messages": items, "end": start + max(len(items) - 1, 0), "first_page_uri": uri(0),
                "next_page_uri": uri(page + 1) if more else None, "page": page,
                "page_size": size, "previous_page_uri": uri(page - 1) if page else None,
                "start": start, "uri": uri(page)}

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` on the server loop without holding the response; keep a reference."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lifecycle(self, message: dict[str, Any], callback: str | None,
                         error_code: int | None) -> None:
        """Advance a message through its statuses, posting a callback after each change."""
        for status, code in status_plan(message["status"], error_code):
            await asyncio.sleep(self.callback_delay_s)
            advance(message, status, code)
            if callback and self.callbacks:
                await self._status_callback(callback, message)

    async def _status_callback(self, url: str, message: Mapping[str, Any]) -> None:
        """POST Twilio's status callback form; a target that is down is logged, not fatal."""
        params = {"MessageSid": message["sid"], "SmsSid": message["sid"],
                  "AccountSid": self.account_sid, "From": message["from"], "To": message["to"],
                  "MessageStatus": message["status"], "SmsStatus": message["status"],
                  "ApiVersion": API_VERSION}
        if message["messaging_service_sid"]:
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        if message["error_code"] is not None:
            params["ErrorCode"] = str(message["error_code"])
        try:
            async with self._callback_slots:
                reply = await self.post_signed(url, params)
        except httpx.HTTPError as exc:
            _log.warning("status callback to %s failed: %r", url, exc)
            return
        if reply.is_error:
            _log.warning("status callback to %s answered %s", url, reply.status_code)

    async def post_signed(self, url: str, params: dict[str, str]) -> httpx.Response:
        """POST a form to `url` with the X-Twilio-Signature Twilio would put on it."""
        headers = {"X-Twilio-Signature": self._validator.compute_signature(url, params),
                   "User-Agent": "TwilioProxy/1.1"}
        if self._http is not None:
            return await self._http.post(url, data=params, headers=headers)
        async with httpx.AsyncClient(timeout=10.0) as client:  # used outside a running server
            return await client.post(url, data=params, headers=headers)

    async def _http_fail(self, rule: FailRule) -> dict[str, Any]:
        """POST /_sandbox/fail."""
        self.fail_number(rule.number, rule.error_code)
        return rule.model_dump()

    async def _http_throttle(self, rule: ThrottleRule) -> Response:
        """POST /_sandbox/throttle."""
        try:
            self.throttle(rule.status, rule.count)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse(rule.model_dump())

    async def _http_reset(self) -> dict[str, bool]:
        """POST /_sandbox/reset."""
        self.reset()
        return {"reset": True}

    async def _http_count(self) -> dict[str, int]:
        """GET /_sandbox/count: how many messages were accepted, and how many of them are
        still moving through their statuses (callbacks to come); cheap to poll."""
        return {"messages": len(self.messages), "moving": len(self._tasks)}

    async def _http_outbox(self, to: str | None = None) -> list[dict[str, Any]]:
        """GET /_sandbox/messages: every accepted message, oldest first, optionally ?to=."""
        return [m for m in self.messages if to is None or m["to"] == to]

    async def _http_inbound(self, sms: InboundSms) -> Response:
        """POST /_sandbox/inbound: deliver an incoming SMS to a webhook, as Twilio would,
        retrying as the URL's connection overrides ask."""
        try:
            url, retries, policies = webhook_overrides(sms.url)
        except ValueError as exc:
            return JSONResponse({"status": None, "body": str(exc), "attempts": 0},
                                status_code=400)
        sid = sms.sid or "SM" + secrets.token_hex(16)
        params = {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid,
                  "AccountSid": self.account_sid, "From": sms.from_, "To": sms.to,
                  "Body": sms.body, "NumMedia": "0",
                  "NumSegments": str(num_segments(sms.body)), "SmsStatus": "received",
                  "ApiVersion": API_VERSION}
        attempts = 0
        while True:
            attempts += 1
            reply: httpx.Response | None = None
            error: httpx.HTTPError | None = None
            try:
                reply = await self.post_signed(url, params)
            except httpx.HTTPError as exc:
                error = exc
            failure = failure_kind(reply, error)
            if failure is None or attempts > retries or not (
                    failure in policies or "all" in policies):
                break
            await asyncio.sleep(self.callback_delay_s)
        if reply is None:
            return JSONResponse({"status": None, "body": f"webhook unreachable: {error!r}",
                                 "attempts": attempts}, status_code=502)
        return JSONResponse({"status": reply.status_code, "body": reply.text,
                             "attempts": attempts})


def run_sms_sandbox(host: str, port: int, account_sid: str, auth_token: str,
                    callbacks: bool = True) -> None:
    """Serve an SmsSandbox on host:port until interrupted (blocking)."""
    sandbox = SmsSandbox(account_sid, auth_token)
    sandbox.callbacks = callbacks
    uvicorn.run(sandbox.app, host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    """`python -m sandbox.sms --port 8081`: serve the sandbox on 127.0.0.1. The account and
    token come from LOA_TWILIO_ACCOUNT_SID and LOA_TWILIO_AUTH_TOKEN (kept out of argv, which
    every local user can read), else the options, else sandbox defaults."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.sms", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--account-sid",
                        default=os.environ.get("LOA_TWILIO_ACCOUNT_SID") or "AC" + "0" * 32)
    parser.add_argument("--no-callbacks", action="store_true",
                        help="post no status callbacks (for throughput benchmarks)")
    args = parser.parse_args(argv)
    token = os.environ.get("LOA_TWILIO_AUTH_TOKEN") or "sandbox-token"
    run_sms_sandbox(args.host, args.port, args.account_sid, token, not args.no_callbacks)


if __name__ == "__main__":
    main()
