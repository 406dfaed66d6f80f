"""`loa migrate` on a real redis-server holding data as the release before layout versions
(commit 5366393) wrote it: every subscriber and open incident is still there and read by
today's code, a second run changes nothing, and workers and web servers refuse a layout
newer than they know.

The old data is written here with literal values copied from that release's code (nothing
of today's code writes it)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from coordinator.embedded import Service, free_port
from coordinator.keys import Keys
from coordinator.queries import incident_detail, list_incidents
from coordinator.state import connect
from coordinator.subscribers.registry import find_subscriber
from tests.integration.registry_view import everyone, number_of

pytestmark = pytest.mark.integration

AREA = "hn-ba-dinh-kim-ma"
CONSENT = "2026-11-20T08:00:00Z"


def old_subscriber_id(phone: str | None, email: str | None) -> str:
    """The id of a subscriber made before issue 10 (9bb3721 subscribers/models.py)."""
    natural = phone or (email or "").lower()
    return "sub-" + hashlib.sha1(natural.encode()).hexdigest()[:16]


OLD_PHONE = "+84901000001"
OLD_BY_PHONE = old_subscriber_id(OLD_PHONE, None)  # sub-03c304e6a5f6577c
OLD_EMAIL = "old.reader@example.org"
LOST_PHONE = "+84901000002"  # OLD_BY_EMAIL's phone once; its index entry stayed behind
OLD_BY_EMAIL = old_subscriber_id(None, OLD_EMAIL)  # sub-0710443dd7060018
NEW_ID, NEW_PHONE, NEW_EMAIL = "sub-5c1e0b7a9d2f4e61", "+84901000003", "New@Example.org"
GONE_ID, GONE_PHONE = "sub-8a2b6c4d0e1f3a5b", "+84901000004"


class Old:
    """A Redis prefix and the `loa` commands that run against it."""

    def __init__(self, service: Service, prefix: str, root: Path) -> None:
        self.keys = Keys(prefix)
        self.url = service.url
        self.redis = redis.Redis.from_url(service.url, decode_responses=True)
        self.raw = redis.Redis.from_url(service.url)  # bitmaps are not text
        self.env = {**os.environ, "LOA_REDIS_URL": service.url, "LOA_REDIS_PREFIX": prefix,
                    "LOA_DATA_DIR": str(root), "LOA_LOG_FORMAT": "json",
                    "LOA_KAFKA_URL": f"127.0.0.1:{free_port()}",  # nothing listens
                    "LOA_SECRET_KEY": "test-secret-key-0123456789"}

    def loa(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `loa ARGS` to its end."""
        return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=120, check=False)

    def snapshot(self) -> dict[str, Any]:
        """Every key under the prefix with its content."""
        readers = {"hash": self.redis.hgetall, "list": lambda k: self.redis.lrange(k, 0, -1),
                   "zset": lambda k: self.redis.zrange(k, 0, -1, withscores=True),
                   "set": lambda k: sorted(self.redis.smembers(k)), "string": self._string,
                   "stream": self.redis.xlen}
        return {key: readers[str(self.redis.type(key))](key)
                for key in sorted(self.redis.scan_iter(f"{self.keys.prefix}:*"))}

    def _string(self, key: str) -> str | bytes | None:
        value = self.raw.get(key)
        try:
            return value.decode() if value is not None else None
        except UnicodeDecodeError:
            return value

    def run(self, work: Any) -> Any:
        """Run `work(redis, keys)` with today's async client."""
        async def go() -> Any:
            client = connect(self.url)
            try:
                return await work(client, self.keys)
            finally:
                await client.aclose()
        return asyncio.run(go())


def _subscriber(sub_id: str, phone: str | None, email: str | None, channels: list[str],
                status: str = "active") -> str:
    """A subscriber's JSON as 5366393 stored it (Subscriber.model_dump_json)."""
    return json.dumps({"id": sub_id, "phone": phone, "email": email, "language": "vi",
                       "areas": [AREA], "topics": ["*"], "channels": channels,
                       "role": "resident", "status": status, "consent_at": CONSENT,
                       "consent_source": "cli"}, separators=(",", ":"))


def _record(k: Keys, sub_id: str) -> str:
    return f"{k.prefix}:sub:{sub_id}"


def _index(k: Keys, kind: str, value: str = "") -> str:
    """An index set of layouts 1 and 2 (`all`, `active`: no value)."""
    return f"{k.prefix}:subs:{kind}:{value}" if value else f"{k.prefix}:subs:{kind}"


def _by_contact(k: Keys, contact: str) -> str:
    return f"{k.prefix}:subs:contact:{contact}"


def write_v1(old: Old) -> None:
    """Subscribers (two with SHA-1 ids, one random, one opted out), their indexes, a stale
    contact entry and one to a record that is gone, and an open and a closed incident."""
    k, r = old.keys, old.redis
    subs = [(OLD_BY_PHONE, OLD_PHONE, None, ["sms"], "active"),
            (OLD_BY_EMAIL, None, OLD_EMAIL, ["email"], "active"),
            (NEW_ID, NEW_PHONE, NEW_EMAIL, ["sms", "email"], "active"),
            ("sub-77d0c9e8f1a2b3c4", "+84901000005", None, ["sms"], "opted_out")]
    for sub_id, phone, email, channels, status in subs:
        r.set(_record(k, sub_id), _subscriber(sub_id, phone, email, channels, status))
        r.sadd(_index(k, "all"), sub_id)
        for index in [_index(k, "area", AREA), _index(k, "topic", "*"), _index(k, "lang", "vi"),
                      *[_index(k, "channel", c) for c in channels],
                      *([_index(k, "active")] if status == "active" else [])]:
            r.sadd(index, sub_id)
        for contact in [c for c in (phone, (email or "").lower()) if c]:
            r.set(_by_contact(k, contact), sub_id)
    r.set(_by_contact(k, LOST_PHONE), OLD_BY_EMAIL)
    r.set(_by_contact(k, GONE_PHONE), GONE_ID)
    for seq, status in [(1, "awaiting_approval"), (2, "closed")]:
        incident_id, at = f"INC-{seq:05d}", f"2026-11-2{seq}T08:00:00+00:00"
        r.hset(k.incident(incident_id), mapping={
            "id": incident_id, "kind": "flood", "area": AREA, "severity": "severe",
            "title": f"Ngập {seq}", "details": "", "status": status, "playbook": "flood",
            "approval_id": "", "statement_id": "", "report_count": 1, "opened_at": at,
            "last_report_at": at, "updated_at": at, "chosen_playbook": "",
            "source_actor": "token:hanoi-dispatch", "source_scope": "", "source_verified": "1"})
        r.zadd(k.incidents(), {incident_id: 1795000000 + seq})
        r.rpush(k.timeline(incident_id), json.dumps({
            "schema_version": 1, "type": "audit", "at": at, "actor": "token:hanoi-dispatch",
            "action": "incident.opened", "interface": "api", "incident_id": incident_id,
            "subject": f"rep-{seq}", "detail": {"kind": "flood"}}))
    r.sadd(f"{k.prefix}:incident:INC-00001:reached", NEW_ID, OLD_BY_PHONE)
    r.set(f"{k.prefix}:dispatch:STM-00001-1:batch:sms:0", f"{OLD_BY_PHONE},{NEW_ID}")
    r.set(k.incident_seq(), 2)
    r.set(k.open_incident(f"flood:{AREA}"), "INC-00001")
    for sid in ("SM0000000000000000000000000000001", "SM0000000000000000000000000000002"):
        r.set(k.provider_message(sid), f"STM-00001-1:sms:{NEW_ID}")  # no lifetime in v1
    r.hset(k.early_callbacks(), "SM0000000000000000000000000000003", "delivered")


def without(snapshot: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in snapshot.items() if k not in keys}


def test_an_upgrade_keeps_every_subscriber_and_open_incident(
        redis_server: Service, tmp_path: Path) -> None:
    """Dry run: the plan, nothing written. Apply: version 3, the stale and dangling contact
    entries gone, the subscribers numbered under their ids, everything else as it was;
    today's code reads it all; again: no change."""
    old = Old(redis_server, "upgrade", tmp_path)
    write_v1(old)
    before = old.snapshot()
    dry = old.loa("migrate")
    assert dry.returncode == 0, dry.stderr
    assert "Redis layout: version 1 (no version key" in dry.stdout
    assert "would: contact index: remove the phone entry leading to " + OLD_BY_EMAIL in dry.stdout
    assert old.snapshot() == before
    applied = old.loa("migrate", "--apply", "--json")
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert (report["version"], report["target"], report["applied"]) == (1, 3, True)
    assert report["steps"][0]["changes"] == [
        f"contact index: remove the phone entry leading to {OLD_BY_EMAIL}, which no longer "
        "has that phone",
        f"contact index: remove the phone entry leading to {GONE_ID}, which no longer has "
        "that phone",
        "provider ids: 2 kept 7 days from now, then expire",
        "early status callbacks: kept 7 days from now, then expire"]
    for key in [old.keys.provider_message("SM0000000000000000000000000000001"),
                old.keys.early_callbacks()]:
        assert 7 * 86400 - 60 < int(old.redis.ttl(key)) <= 7 * 86400
    assert report["steps"][1]["changes"] == [
        "subscribers: 4 numbered, their records and indexes made compact",
        "contact index: 5 entries into buckets",
        "incidents' reached subscribers: 1 converted to subscriber numbers",
        "batches not finished: 1 converted to subscriber numbers",
        "old subscriber keys: 11 removed"]
    after = old.snapshot()
    assert after[old.keys.layout_version()] == "3"
    registry = f"{old.keys.prefix}:sub"  # the registry's keys, old and new
    reached = old.keys.incident_reached("INC-00001")
    batch = old.keys.dispatch_batch("STM-00001-1", "sms", 0)
    changed = [k for k in after if k.startswith(registry)] + [reached, batch]
    assert without(after, old.keys.layout_version(), *changed) == without(
        before, *[k for k in before if k.startswith(registry)], reached, batch)
    numbers = {s.id: number_of(old.redis, old.keys, s.id) for s in everyone(old.redis, old.keys)}
    assert after[batch] == f"{numbers[OLD_BY_PHONE]},{numbers[NEW_ID]}"
    assert sorted(n for n in numbers.values() if n and old.redis.getbit(reached, n)) == sorted(
        [numbers[NEW_ID], numbers[OLD_BY_PHONE]])
    assert not [k for k in after if k.startswith(f"{registry}:") or k.startswith(
        f"{registry}s:area:")]  # the old records and index sets are gone

    subscribers = everyone(old.redis, old.keys)
    assert [(s.id, s.status) for s in subscribers] == [
        (OLD_BY_PHONE, "active"), (OLD_BY_EMAIL, "active"), (NEW_ID, "active"),
        ("sub-77d0c9e8f1a2b3c4", "opted_out")]
    found = {c: old.run(lambda r, k, c=c: find_subscriber(r, k, c))
             for c in (OLD_PHONE, OLD_EMAIL, NEW_EMAIL, LOST_PHONE, GONE_PHONE)}
    assert {c: s.id if s else None for c, s in found.items()} == {
        OLD_PHONE: OLD_BY_PHONE, OLD_EMAIL: OLD_BY_EMAIL, NEW_EMAIL: NEW_ID,
        LOST_PHONE: None, GONE_PHONE: None}
    export = old.loa("subscribers", "export", "--operator-reason", "test")
    assert export.returncode == 0, export.stderr
    assert sorted(line.split(",")[0] for line in export.stdout.splitlines()[1:]) == [
        "", "+84901000001", "+84901000003", "+84901000005"]

    incidents = old.run(list_incidents)
    assert [(i["id"], i["status"]) for i in incidents] == [
        ("INC-00002", "closed"), ("INC-00001", "awaiting_approval")]
    detail = old.run(lambda r, k: incident_detail(r, k, "INC-00001"))
    assert [e["action"] for e in detail["timeline"]] == ["incident.opened"]
    assert old.redis.get(old.keys.open_incident(f"flood:{AREA}")) == "INC-00001"

    again = old.loa("migrate", "--apply")
    assert again.returncode == 0, again.stderr
    assert "up to date: nothing to do" in again.stdout
    assert old.snapshot() == {**after, old.keys.audit(): 1}  # the export's audit entry


def test_a_migration_stopped_midway_finishes_what_is_left(
        redis_server: Service, tmp_path: Path) -> None:
    """A run that died after its first change (no version recorded): the next run does the
    rest, and the end state is that of an uninterrupted run."""
    old = Old(redis_server, "midway", tmp_path)
    write_v1(old)
    old.redis.delete(_by_contact(old.keys, LOST_PHONE))  # the first change, then a crash
    done = old.loa("migrate", "--apply", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"][0]["changes"] == [
        f"contact index: remove the phone entry leading to {GONE_ID}, which no longer has "
        "that phone",
        "provider ids: 2 kept 7 days from now, then expire",
        "early status callbacks: kept 7 days from now, then expire"]
    assert old.redis.get(old.keys.layout_version()) == "3"
    assert old.run(lambda r, k: find_subscriber(r, k, GONE_PHONE)) is None


def test_a_fresh_redis_is_stamped_current_and_nothing_else(
        redis_server: Service, tmp_path: Path) -> None:
    """On an empty Redis a dry run writes nothing and `--apply` writes only the version key."""
    old = Old(redis_server, "fresh", tmp_path)
    dry = old.loa("migrate")
    assert dry.returncode == 0, dry.stderr
    assert old.snapshot() == {}
    done = old.loa("migrate", "--apply")
    assert done.returncode == 0, done.stderr
    assert "stamped version 3" in done.stdout
    assert old.snapshot() == {old.keys.layout_version(): "3"}


@pytest.mark.parametrize("command", ["worker", "web", "migrate"])
def test_a_layout_newer_than_this_loa_is_refused(
        redis_server: Service, tmp_path: Path, command: str) -> None:
    """A newer release's data: `loa worker` and `loa web` do not start, `loa migrate`
    touches nothing; each says why."""
    old = Old(redis_server, f"newer-{command}", tmp_path)
    write_v1(old)
    old.redis.set(old.keys.layout_version(), "4")
    before = old.snapshot()
    done = old.loa(command, "--apply") if command == "migrate" else old.loa(command)
    assert done.returncode != 0
    said = " ".join((done.stdout + done.stderr).split())
    assert "the Redis layout is version 4, newer than this Loa knows (3)" in said
    assert "Traceback" not in said
    assert old.snapshot() == before


def test_web_on_an_old_layout_refuses_and_says_to_migrate(
        redis_server: Service, tmp_path: Path) -> None:
    """Version 1 data: `loa web` does not start (the registry of layout 3 cannot read it),
    saying to run `loa migrate --apply`, and does not stamp a version itself."""
    old = Old(redis_server, "older-web", tmp_path)
    write_v1(old)
    before = old.snapshot()
    done = old.loa("web")
    assert done.returncode != 0
    said = " ".join((done.stdout + done.stderr).split())
    assert "the Redis layout is version 1, older than this Loa's 3: run `loa migrate --apply`" \
        in said
    assert "Traceback" not in said
    assert old.redis.get(old.keys.layout_version()) is None
    assert old.snapshot() == before
