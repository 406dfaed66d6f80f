"""Subscriber ids in a real registry: random, found again through the contact index, and
kept through an export and an import elsewhere."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.keys import Keys
from coordinator.state import connect
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.registry import SubscriberConflict, find_subscriber, register
from tests.integration.registry_view import everyone, id_by_contact, record
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

PHONE = "+84912000001"


def _hashes(contact: str) -> list[str]:
    """Hex digests of the contact a guesser would try (the old id was sha1[:16])."""
    return [hashlib.new(name, text.encode()).hexdigest()
            for name in ("md5", "sha1", "sha256", "sha512")
            for text in (contact, contact.removeprefix("+"), contact.lower())]


def _ids_of(stack: Stack, keys: Keys, contact: str) -> list[str]:
    return [s.id for s in everyone(stack.redis, keys) if contact in s.contact_keys()]


def test_importing_the_same_phone_twice_keeps_one_record(
        make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    """A second file with the same phone updates its record (same id, new areas); the id is
    random, contains no hash of the phone, and an export then import elsewhere keeps it."""
    stack = make_stack()
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(f"phone,areas,channels\n{PHONE},hn-ba-dinh,sms\n")
    second.write_text("phone,areas,channels,language\n0912000001,hn-tay-ho,sms,en\n")
    assert "1 saved" in stack.subscribers("import", str(first)).stdout
    [sub_id] = _ids_of(stack, stack.keys, PHONE)
    assert "1 saved" in stack.subscribers("import", str(second)).stdout
    assert _ids_of(stack, stack.keys, PHONE) == [sub_id]
    assert id_by_contact(stack.redis, stack.keys, PHONE) == sub_id
    found = record(stack.redis, stack.keys, sub_id)
    assert found is not None
    assert (found.areas, found.language) == (["hn-tay-ho"], "en")
    assert not any(sub_id.removeprefix("sub-") in h for h in _hashes(PHONE))

    exported = stack.subscribers("export").stdout
    assert f"{PHONE},,en,hn-tay-ho,*,sms,resident,active,{sub_id},no," in exported.splitlines()
    (tmp_path / "export.csv").write_text(exported)
    elsewhere = {**stack.env, "LOA_REDIS_PREFIX": "elsewhere"}
    done = subprocess.run([sys.executable, "-m", "coordinator.cli", "subscribers", "import",
                           "--operator-reason", "test",
                           str(tmp_path / "export.csv")], env=elsewhere, capture_output=True,
                          text=True, timeout=60, check=False)
    assert "1 saved, 0 unchanged, 0 rejected" in done.stdout, done.stderr
    assert _ids_of(stack, Keys("elsewhere"), PHONE) == [sub_id]


def test_the_same_phone_gets_another_id_in_another_registry(
        make_stack: Callable[..., Stack]) -> None:
    """The id is not a function of the phone: a registry where someone else came first
    gives it another id; a file that names an id for another record's phone is refused,
    not merged, and so is a file whose id is a record here with neither its phone nor its
    email (another installation's numbering)."""
    stack = make_stack()

    async def work() -> tuple[str, str, str]:
        redis = connect(stack.redis_service.url)
        try:
            one, _ = await register(redis, Keys("one"), Subscriber(
                phone=PHONE, areas=["hn"], channels=["sms"]))
            await register(redis, Keys("two"), Subscriber(
                phone="+84911000999", areas=["hn"], channels=["sms"]))
            two, _ = await register(redis, Keys("two"), Subscriber(
                phone=PHONE, areas=["hn"], channels=["sms"]))
            again, changed = await register(redis, Keys("one"), Subscriber(
                phone=PHONE, areas=["hn"], channels=["sms"]))
            assert not changed
            with pytest.raises(SubscriberConflict, match=one.id):
                await register(redis, Keys("one"), Subscriber(
                    id="sub-0000000000000000", phone=PHONE, areas=["hn"], channels=["sms"]))
            # another installation's file: its sub-n1 is someone else here
            with pytest.raises(SubscriberConflict, match="someone else here"):
                await register(redis, Keys("one"), Subscriber(
                    id=one.id, phone="+84911000888", areas=["hn"], channels=["sms"]),
                    from_file=True)
            return one.id, two.id, again.id
        finally:
            await redis.aclose()

    one, two, again = asyncio.run(work())
    assert one != two and again == one


def test_an_id_whose_number_was_handed_out_is_saved_under_a_new_one_and_said(
        make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    """A file's `sub-n3`, where number 3 was handed out here but has no record (left before,
    or another installation's numbering): the row is saved under the next number, and the
    import says so on the row's line."""
    stack = make_stack()
    keys = Keys(stack.keys.prefix + "-renamed")
    stack.redis.set(keys.subs_next(), 5)  # numbers 1 to 5 were handed out
    csv = tmp_path / "renamed.csv"
    csv.write_text("phone,areas,channels,id\n+84912000077,hn-ba-dinh,sms,sub-n3\n")
    done = subprocess.run([sys.executable, "-m", "coordinator.cli", "subscribers", "import",
                           "--operator-reason", "test",
                           str(csv)], env={**stack.env, "LOA_REDIS_PREFIX": keys.prefix},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "1 saved (1 under a new id), 0 unchanged, 0 rejected" in done.stdout
    assert (f"{csv}:2: id: sub-n3 is saved as sub-n6 (sub-n3's number was handed out here "
            "before)") in done.stderr
    assert _ids_of(stack, keys, "+84912000077") == ["sub-n6"]


def test_a_changed_email_no_longer_finds_the_record(make_stack: Callable[..., Stack]) -> None:
    """When a record's email changes, the old address stops leading to it, so importing the
    old address makes a new record instead of rewriting this one."""
    stack = make_stack()

    async def work() -> tuple[str, str, str | None]:
        redis = connect(stack.redis_service.url)
        keys = Keys("mail")
        try:
            made, _ = await register(redis, keys, Subscriber(
                email="old@mail.example", areas=["hn"], channels=["email"]))
            await register(redis, keys, made.model_copy(update={"email": "new@mail.example"}))
            other, _ = await register(redis, keys, Subscriber(
                email="Old@mail.example", areas=["hn-tay-ho"], channels=["email"]))
            owner = await find_subscriber(redis, keys, "new@mail.example")
            return made.id, other.id, owner.id if owner else None
        finally:
            await redis.aclose()

    made, other, new_owner = asyncio.run(work())
    assert other != made and new_owner == made
