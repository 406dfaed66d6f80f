"""The compact registry's record and bitmap forms (subscribers.store), exact."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

from coordinator.keys import Keys
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.store import (
    CONTACT_BUCKETS,
    contact_key,
    decode,
    encode,
    id_for,
    index_bits,
    record_key,
    set_bits,
)

AT = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def test_a_plain_record_is_short_and_leaves_its_defaults_out() -> None:
    """A one-area SMS subscriber with a canonical id: no id, topics, role, drills or lists
    stored; the record reads back the same."""
    sub = Subscriber(id="sub-n42", phone="+84912345678", language="vi", areas=["hn-ba-dinh"],
                     channels=["sms"], consent_at=AT)
    raw = encode(sub, 42)
    assert raw == '[0,"+84912345678",0,"vi",["hn-ba-dinh"],"sms","a",1796378400000,"cli"]'
    assert decode(42, raw) == sub


def test_a_full_record_keeps_every_field() -> None:
    """Another id form, both channels, topics, role, drills, lists, a status and a source."""
    sub = Subscriber(id="sub-0123456789abcdef", phone="+84912345678", email="a@b.vn",
                     language="en", areas=["hn-ba-dinh", "hn-red-river-banks"],
                     topics=["flood", "storm"], channels=["sms", "email"], role="press",
                     drills=True, lists=["desk"], status="opted_out", consent_at=AT,
                     consent_source="web")
    raw = encode(sub, 7)
    assert raw.startswith('["sub-0123456789abcdef",')
    assert decode(7, raw) == sub
    assert decode(7, raw).model_dump() == sub.model_dump()


def test_consent_is_kept_to_the_millisecond() -> None:
    """The record keeps milliseconds (a consent time needs no more)."""
    sub = Subscriber(id="sub-n1", phone="+84912345678", areas=["hn"], channels=["sms"],
                     consent_at=AT.replace(microsecond=654321))
    assert decode(1, encode(sub, 1)).consent_at == AT.replace(microsecond=654000)


def test_index_bits_name_each_field_and_active_only_while_active() -> None:
    """One bitmap per area, topic, channel, the language, drills, each list, and active."""
    keys = Keys("t")
    sub = Subscriber(id="sub-n1", phone="+84912345678", areas=["a1", "a2"], channels=["sms"],
                     language="vi", drills=True, lists=["desk"])
    assert index_bits(keys, sub) == [
        "t:subs:bits:area:a1", "t:subs:bits:area:a2", "t:subs:bits:topic:*",
        "t:subs:bits:channel:sms", "t:subs:bits:lang:vi", "t:subs:bits:drills:yes",
        "t:subs:bits:list:desk", "t:subs:bits:active"]
    assert "t:subs:bits:active" not in index_bits(keys, sub.model_copy(
        update={"status": "pending"}))


def test_records_and_contacts_go_to_their_buckets() -> None:
    """512 numbers a record bucket; a contact's bucket is its CRC32 modulo 65536."""
    keys = Keys("t")
    assert [record_key(keys, n) for n in (1, 511, 512, 1_000_000)] == [
        "t:subs:rec:0", "t:subs:rec:0", "t:subs:rec:1", "t:subs:rec:1953"]
    assert CONTACT_BUCKETS == 65536
    assert contact_key(keys, "+84912345678") == "t:subs:contacts:" + str(
        zlib.crc32(b"+84912345678") % 65536)


def test_set_bits_reads_bits_as_redis_numbers_them() -> None:
    """Bit 0 is the most significant bit of the first byte; an offset shifts them all."""
    assert set_bits(b"\x80\x01\x00\xff") == [0, 15, 24, 25, 26, 27, 28, 29, 30, 31]
    assert set_bits(b"\x40", first_bit=80) == [81]
    assert set_bits(b"") == []


def test_a_new_record_keeps_its_id_unless_it_names_another_number() -> None:
    """An id of another form, or `sub-n<k>` given number k, is kept; `sub-n<k>` given
    another number (k was handed out here before) gives way to the number's own id; no id:
    the number's."""
    assert [id_for(i, n) for i, n in [("sub-0123456789abcdef", 9), ("sub-n9", 9),
                                      ("sub-n5", 9), ("", 9)]] == [
        "sub-0123456789abcdef", "sub-n9", "sub-n9", "sub-n9"]


def test_a_channel_listed_twice_counts_once() -> None:
    """`sms;sms` asks for SMS once (it made two deliveries of one id, and two SMS); so do a
    repeated area, topic or list. A record an older release stored with a channel twice
    reads back with it once."""
    sub = Subscriber(phone="+84912345678", areas=["hn-ba-dinh", "hn-ba-dinh"],
                     topics=["flood", "flood"], channels=["sms", "sms"], lists=["a", "a"],
                     consent_at=AT)
    assert (sub.areas, sub.topics, sub.channels, sub.lists) == (
        ["hn-ba-dinh"], ["flood"], ["sms"], ["a"])
    stored = '[0,"+84912345678",0,"vi",["hn-ba-dinh"],"sms,email,sms","a",1796378400000,"cli"]'
    assert decode(42, stored).channels == ["sms", "email"]
