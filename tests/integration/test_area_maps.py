"""Following the city's map when it changes: subscribers, an open incident, a reporter's
scope and a playbook of the 2019 map moved to the 2025 map by `loa areas migrate`, and
statements reaching the places people chose — counted at the SMS sandbox."""

from __future__ import annotations

import asyncio
import shutil
import signal
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from coordinator.city import load_city
from coordinator.embedded import Service
from coordinator.events import Severity
from coordinator.incidents.surge import detect, queue_count
from coordinator.keys import Keys
from coordinator.migrations.area_map import AreaMapMismatch, check_area_map
from coordinator.migrations.startup import maps_of, move_embedded_map
from coordinator.model.incident import Incident, IncidentStatus
from coordinator.settings import REPO_ROOT, Settings
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.optin import OptinRequest, request_subscription
from coordinator.subscribers.registry import register
from tests.feed_schemas import schema
from tests.integration.factories import (
    approve_a_flood,
    audit_events,
    file_report,
    flood_body,
    timeline_entries,
)
from tests.integration.registry_view import id_by_contact, record
from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration

CSV = """\
phone,email,language,areas,topics,channels
0912100001,,vi,hn-ba-dinh-kim-ma,,sms
0912100002,,en,hn-hoan-kiem-hang-bac,,sms
0912100003,,vi,hn-ba-dinh,,sms
0912100004,,vi,hn-long-bien-bo-de,,sms
"""
KIM_MA, HANG_BAC, BA_DINH, BO_DE, ATLANTIS = (f"+8491210000{i}" for i in range(1, 6))
KIM_MA_NOW = ("hn-phuong-ba-dinh", "hn-phuong-ngoc-ha", "hn-phuong-giang-vo")
MIGRATE = ("areas", "migrate", "--from", "hanoi-2019", "--to", "hanoi-2025")
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"


def _stop_web(stack: Stack) -> None:
    assert stack.web is not None
    stack.web.send_signal(signal.SIGTERM)
    stack.web.wait(30)


def _add_stray(stack: Stack) -> None:
    """A subscriber of an area neither map has (left by an earlier configuration)."""

    async def add() -> None:
        client = aioredis.from_url(stack.redis_service.url, decode_responses=True)
        await register(client, stack.keys, Subscriber(
            phone=ATLANTIS, language="vi", areas=["hn-atlantis"], channels=["sms"]))
        await client.aclose()

    asyncio.run(add())


def _areas_of(stack: Stack, phone: str) -> list[str]:
    sub_id = id_by_contact(stack.redis, stack.keys, phone)
    assert sub_id
    found = record(stack.redis, stack.keys, sub_id)
    assert found
    return found.areas


def test_people_keep_their_places_when_the_map_changes(
        make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    books = tmp_path / "playbooks"
    shutil.copytree(REPO_ROOT / "playbooks", books)
    old_quarter = books / "flood-old-quarter.yaml"
    old_quarter.write_text(old_quarter.read_text(encoding="utf-8").replace(
        "areas: [hn-hoan-kiem]", "areas: [hn-hoan-kiem, hn-ba-dinh-truc-bach]"), "utf-8")
    stack = make_stack(sms=True, LOA_AREA_MAP="hanoi-2019", LOA_PLAYBOOKS_DIR=str(books))
    residents = tmp_path / "residents.csv"
    residents.write_text(CSV, encoding="utf-8")
    assert "4 saved" in stack.subscribers("import", str(residents)).stdout
    _add_stray(stack)
    stack.start_worker_and_web()
    stack.token("kim-ma-desk", "reporter", area="hn-ba-dinh-kim-ma")
    incident = file_report(stack, flood_body("hn-ba-dinh-kim-ma"))  # open, awaiting approval
    stack.stop_worker()
    _stop_web(stack)

    # A dry run says what would move and what cannot, and changes nothing.
    dry = stack.cli(*MIGRATE)
    assert dry.returncode == 1, dry.stderr
    lines = dry.stdout.splitlines()
    assert f"subscribers: 1 of hn-ba-dinh-kim-ma would move to {', '.join(KIM_MA_NOW)}" in lines
    assert ("subscribers NOT moved: 1 of hn-atlantis (hanoi-2025 has no area for it: add it "
            "to the mapping file)") in lines
    assert (f"incident {incident} NOT moved: hn-ba-dinh-kim-ma (split into "
            f"{', '.join(KIM_MA_NOW)}: choose one with --choose "
            f"hn-ba-dinh-kim-ma=hn-phuong-ba-dinh)") in lines
    assert any(line.startswith("credential kim-ma-desk NOT moved") for line in lines)
    assert "playbook flood-old-quarter.yaml:9: hn-ba-dinh-truc-bach -> hn-phuong-ba-dinh" \
        in lines
    assert lines[-1] == "dry run: nothing changed; --apply moves it"
    assert _areas_of(stack, KIM_MA) == ["hn-ba-dinh-kim-ma"]
    assert "hn-ba-dinh-truc-bach" in old_quarter.read_text(encoding="utf-8")

    # The new map in force refuses to run on data of the old one, saying what to do.
    stack.env["LOA_AREA_MAP"] = "hanoi-2025"
    refused = stack.cli("worker", timeout_s=90)
    assert refused.returncode != 0
    assert "run `loa areas migrate --from hanoi-2019 --to hanoi-2025`" in refused.stderr

    applied = stack.cli(*MIGRATE, "--choose", "hn-ba-dinh-kim-ma=hn-phuong-giang-vo",
                        "--apply")
    lines = applied.stdout.splitlines()
    assert applied.returncode == 1, applied.stderr  # the stray subscriber stays as it was
    assert f"incident {incident}: hn-ba-dinh-kim-ma -> hn-phuong-giang-vo" in lines
    assert "credential kim-ma-desk: hn-ba-dinh-kim-ma -> hn-phuong-giang-vo" in lines
    assert lines[-1] == ("done: the data is on hanoi-2025; name it in config/areas.yaml "
                         "(map: hanoi-2025) and start Loa again")
    assert _areas_of(stack, KIM_MA) == list(KIM_MA_NOW)
    assert _areas_of(stack, HANG_BAC) == ["hn-phuong-hoan-kiem"]
    assert _areas_of(stack, BA_DINH) == ["hn-ba-dinh"]  # a former district: a grouping now
    assert _areas_of(stack, ATLANTIS) == ["hn-atlantis"]  # reported, not dropped
    assert "areas: [hn-hoan-kiem, hn-phuong-ba-dinh]" in old_quarter.read_text(encoding="utf-8")
    assert stack.incident(incident)["area"] == "hn-phuong-giang-vo"
    moved = timeline_entries(stack, incident, "incident.area_moved")
    assert [e["detail"] for e in moved] == [{"from": "hn-ba-dinh-kim-ma",
                                             "to": "hn-phuong-giang-vo", "map": "hanoi-2025"}]
    assert moved[0]["actor"].startswith("operator:") and moved[0]["interface"] == "cli"
    migrated = [e for e in audit_events(stack) if e["action"] == "areas.migrated"]
    assert [(e["subject"], e["detail"]["from"]) for e in migrated] == [("hanoi-2025",
                                                                         "hanoi-2019")]
    again = stack.cli(*MIGRATE, "--apply")  # what is left (the stray) is said again
    assert again.returncode == 1
    assert again.stdout.splitlines()[0].startswith("subscribers NOT moved: 1 of hn-atlantis")
    assert _areas_of(stack, KIM_MA) == list(KIM_MA_NOW)  # nothing moved twice

    # On the new map, the open incident's statement reaches Kim Mã's and Ba Đình's people.
    stack.start_worker_and_web()
    assert stack.cli("approve", f"APR-{incident[4:]}-1",
                     *stack.as_person("nguyen-van-an")).returncode == 0
    assert [m["to"] for m in stack.sms_sent(to=KIM_MA, timeout_s=30)] == [KIM_MA]
    assert [m["to"] for m in stack.sms_sent(to=BA_DINH, timeout_s=30)] == [BA_DINH]
    # and one in the ward that took Hàng Bạc reaches its subscriber (the old quarter's book)
    other, statement = approve_a_flood(stack, "hn-phuong-hoan-kiem", "Ngập phố cổ")
    assert stack.incident(other)["playbook"] == "flood-old-quarter"
    assert [m["to"] for m in stack.sms_sent(to=HANG_BAC, timeout_s=30)] == [HANG_BAC]
    wait_for(lambda: stack.redis.zscore(stack.keys.statements_published(), statement), 30,
             "the second statement published")
    sent = {m["to"] for m in stack.sms_sent(timeout_s=5)}
    assert BO_DE not in sent and ATLANTIS not in sent

    # Its CAP alert carries the ward's official code, and validates.
    with stack.anonymous() as http:
        cap = http.get(f"/cap/STM-{incident[4:]}-1.xml")
        page = http.get("/", params={"lang": "en"})
    schema("CAP-v1.2.xsd").validate(cap.content)
    area = ET.fromstring(cap.content).find(f"{CAP}info/{CAP}area")
    assert area is not None
    codes = [(g.findtext(f"{CAP}valueName"), g.findtext(f"{CAP}value"))
             for g in area.findall(f"{CAP}geocode")]
    assert codes == [("LOA", "hn-phuong-giang-vo"), ("GSO", "00025")]
    assert area.findtext(f"{CAP}areaDesc") == "Phường Giảng Võ"
    # The public page's filter: the city, the groupings, then the wards and communes.
    assert '<optgroup label="Groupings">' in page.text
    assert '<optgroup label="Wards and communes">' in page.text
    assert ">Giang Vo Ward</option>" in page.text
    assert ">Ba Dinh (former district)</option>" in page.text

    doctor = stack.cli("doctor")
    assert "subscribers follow areas it lacks (hn-atlantis: 1)" in doctor.stdout
    assert doctor.returncode == 1


def test_loa_up_moves_its_own_redis_and_stops_on_a_split_incident(
        redis_server: Service, tmp_path: Path) -> None:
    """`loa up`'s step before the worker starts (`move_embedded_map`), on a real Redis."""
    books = tmp_path / "playbooks"
    shutil.copytree(REPO_ROOT / "playbooks", books)
    keys = Keys(f"t{uuid.uuid4().hex[:8]}")
    settings = Settings(_env_file=None, redis_url=redis_server.url,  # type: ignore[call-arg]
                        redis_prefix=keys.prefix, area_map=None, playbooks_dir=books)

    async def seed(area: str, phone: str) -> None:
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        await register(client, keys, Subscriber(phone=phone, language="vi", areas=[area],
                                                channels=["sms"]))
        await client.aclose()

    asyncio.run(seed("hn-hoan-kiem-hang-bac", "+84912300001"))

    async def waiting() -> str:  # a web subscription not confirmed yet
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        request = await request_subscription(client, keys, Subscriber(
            email="tho@dan.example", language="vi", areas=["hn-ba-dinh-kim-ma"],
            channels=["email"]), datetime.now(UTC))
        await client.aclose()
        return request.subscriber.id

    pending = asyncio.run(waiting())
    lines = move_embedded_map(redis_server.url, settings)  # no map recorded: unversioned
    assert lines == ["area map: moving the data from hanoi-2019 to hanoi-2025",
                     "subscribers: 1 of hn-ba-dinh-kim-ma moved to "
                     f"{', '.join(KIM_MA_NOW)}",
                     "subscribers: 1 of hn-hoan-kiem-hang-bac moved to hn-phuong-hoan-kiem",
                     "subscriptions waiting for confirmation: 1 moved",
                     "done: the data is on hanoi-2025"]
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    request = OptinRequest.model_validate_json(str(client.get(keys.optin_request(pending))))
    assert request.subscriber.areas == list(KIM_MA_NOW)  # confirming brings no old code back
    assert int(client.ttl(keys.optin_request(pending))) > 0  # and its link still expires
    assert move_embedded_map(redis_server.url, settings) == []  # on the map in force now

    # Data recorded on the old map, with an open incident in a ward that was split.
    client.set(keys.area_map(), "hanoi-2019")
    client.zadd(keys.incidents(), {"INC-00009": 1.0})
    at = datetime.now(UTC)
    client.hset(keys.incident("INC-00009"), mapping=Incident(
        id="INC-00009", kind="flood", area="hn-ba-dinh-kim-ma", severity=Severity.severe,
        title="Ngập", details="", status=IncidentStatus.awaiting_approval, opened_at=at,
        last_report_at=at, updated_at=at).to_hash())
    with pytest.raises(AreaMapMismatch) as refused:
        move_embedded_map(redis_server.url, settings)
    assert ("incident INC-00009 NOT moved: hn-ba-dinh-kim-ma (split into "
            f"{', '.join(KIM_MA_NOW)}: choose one with --choose "
            "hn-ba-dinh-kim-ma=hn-phuong-ba-dinh)") in str(refused.value).splitlines()
    assert client.get(keys.area_map()) == "hanoi-2019"  # not recorded: the operator chooses
    client.close()


def test_data_without_a_recorded_map_is_read_for_its_codes(redis_server: Service) -> None:
    """Subscribers imported before the first worker started are on the map in force if
    their codes are all of it (the first worker records it), else on `unversioned`."""
    settings = Settings(_env_file=None, area_map=None)  # type: ignore[call-arg]
    choice = maps_of(settings)
    assert (choice.in_force, choice.unversioned) == ("hanoi-2025", "hanoi-2019")

    async def scenario(keys: Keys, areas: list[str]) -> tuple[str | None, bool]:
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        try:
            await register(client, keys, Subscriber(phone="+84912300002", language="vi",
                                                    areas=areas, channels=["sms"]))
            await client.set(keys.open_incident("claims"), "INC-00001")  # names no area
            await client.set(keys.open_incident("flood:hn-ba-dinh"), "INC-00002")
            try:
                found = await check_area_map(client, keys, choice)
            except AreaMapMismatch:
                return await client.get(keys.area_map()), False
            return found.name, found.recorded
        finally:
            await client.aclose()

    now = asyncio.run(scenario(Keys(f"t{uuid.uuid4().hex[:8]}"), ["hn-phuong-giang-vo", "hn"]))
    assert now == ("hanoi-2025", True)  # recorded by the check, the worker starts
    old = asyncio.run(scenario(Keys(f"t{uuid.uuid4().hex[:8]}"), ["hn-ba-dinh-kim-ma"]))
    assert old == (None, False)  # refused, nothing recorded: `loa areas migrate` first


def test_a_surge_in_a_grouping_does_not_silence_another_sharing_a_ward(
        redis_server: Service) -> None:
    """Ba Đình's and Đống Đa's former districts share Giảng Võ ward: a surge raised in the
    first covers the first and the city, not the second."""
    city = load_city(REPO_ROOT / "config")  # hanoi-2025
    keys = Keys(f"t{uuid.uuid4().hex[:8]}")
    at = datetime.now(UTC)

    async def scenario() -> tuple[str | None, list[str]]:
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        try:
            raised = None
            for ward in ("hn-phuong-ba-dinh", "hn-phuong-ba-dinh", "hn-phuong-giang-vo"):
                path = city.ancestors(ward)
                async with client.pipeline(transaction=True) as pipe:
                    queue_count(pipe, keys, "flood", path, at.timestamp(), 600)
                    await pipe.execute()
                raised = await detect(client, keys, city, "flood", path, at, 600, 3) or raised
            quiet = [code for code in ("hn-ba-dinh", "hn-dong-da", "hn")
                     if await client.get(keys.surge_raised("flood", code))]
            return (raised.area if raised else None), quiet
        finally:
            await client.aclose()

    assert "hn-dong-da" in city.ancestors("hn-phuong-giang-vo")
    assert asyncio.run(scenario()) == ("hn-ba-dinh", ["hn-ba-dinh", "hn"])
