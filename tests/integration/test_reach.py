"""The reach an approver sees before approving: counted per channel and per language inside
Redis, in one transaction that leaves none of its working bitmaps behind (a private
redis-server)."""

from __future__ import annotations

import pytest

from channels.segments import segment_count
from coordinator.dispatch.reach import Reach, reach_of
from coordinator.events import RenderedText
from coordinator.runtime import Runtime
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.registry import register

pytestmark = pytest.mark.integration
VI = "Ngập sâu phố Kim Mã, tránh khu vực."  # UCS-2: one segment of 70
EN = "Deep flooding on Kim Ma street: avoid the area. " * 4  # GSM-7, 196 chars: 2 segments


async def test_reach_counts_each_channel_and_language_and_cleans_up(rt: Runtime) -> None:
    people = [  # (phone, email, language, channels, area)
        ("+84901000001", None, "vi", ["sms"], "hn-ba-dinh"),
        ("+84901000002", "b@example.org", "en", ["sms", "email"], "hn-ba-dinh"),
        ("+84901000003", None, "en", ["sms"], "hn-ba-dinh-kim-ma"),  # a ward of Ba Đình
        (None, "d@example.org", "vi", ["email"], "hn-ba-dinh"),
        ("+84901000005", None, "vi", ["sms"], "hn-cau-giay"),  # elsewhere: not reached
    ]
    for phone, email, language, channels, area in people:
        await register(rt.redis, rt.keys, Subscriber(
            phone=phone, email=email, language=language, areas=[area],
            channels=channels))  # type: ignore[arg-type]
    texts = [RenderedText(channel="sms", language="vi", body=VI),
             RenderedText(channel="sms", language="en", body=EN)]
    reach = await reach_of(rt.redis, rt.keys, rt.city, "hn-ba-dinh", "flood", texts)
    assert (segment_count(VI), segment_count(EN)) == (1, 2)
    assert reach == Reach(sms=3, email=2, sms_segments=1 * 1 + 2 * 2)
    assert [k async for k in rt.redis.scan_iter(match=rt.keys.subs_bits("tmp", "*"))] == []
