"""An audience bitmap read a chunk at a time (a private redis-server): exact numbers, and
where the next chunk starts, across windows, empty stretches and the bitmap's end."""

from __future__ import annotations

import pytest

from coordinator.dispatch.fanout import WINDOW, next_chunk
from coordinator.runtime import Runtime

pytestmark = pytest.mark.integration
SET = (3, 5, 40_000, 40_001, 100_000)  # two in the first window, then an empty stretch


async def _bitmap(rt: Runtime, bits: tuple[int, ...]) -> str:
    key = rt.keys.dispatch_audience("CHUNKS")
    async with rt.redis.pipeline(transaction=False) as pipe:
        for bit in bits:
            pipe.setbit(key, bit, 1)
        await pipe.execute()
    return key


@pytest.mark.parametrize(("cursor", "count", "expected"), [
    (0, 2, ([3, 5], WINDOW * 8)),  # nothing else in the window: the next starts after it
    (0, 3, ([3, 5, 40_000], 40_001)),
    (6, 10, ([40_000, 40_001, 100_000], -1)),  # past an empty stretch, to the end
    (40_002, 1, ([100_000], -1)),
    (100_001, 5, ([], -1)),
])
async def test_chunks_of_an_audience(rt: Runtime, cursor: int, count: int,
                                     expected: tuple[list[int], int]) -> None:
    key = await _bitmap(rt, SET)
    assert await next_chunk(rt.redis, key, cursor, count) == expected


async def test_a_chunk_that_takes_the_last_bit_says_it_is_the_end(rt: Runtime) -> None:
    """The whole audience in one read: no empty chunk is cut after it."""
    key = await _bitmap(rt, (1, 2, 9))
    assert await next_chunk(rt.redis, key, 0, 3) == ([1, 2, 9], -1)


async def test_a_bitmap_ending_at_a_window_boundary(rt: Runtime) -> None:
    last = WINDOW * 8 - 1
    key = await _bitmap(rt, (0, last))
    assert await next_chunk(rt.redis, key, 0, 10) == ([0, last], -1)
    assert await next_chunk(rt.redis, key, 0, 2) == ([0, last], WINDOW * 8)
    assert await next_chunk(rt.redis, key, WINDOW * 8, 2) == ([], -1)


async def test_nothing_after_an_empty_window(rt: Runtime) -> None:
    """A bitmap longer than a window with nothing set after the cursor (an audience whose
    last numbers left): BITPOS says so."""
    key = await _bitmap(rt, (3,))
    await rt.redis.setbit(key, 70_000, 0)  # the bitmap is 8,751 bytes, all zero after bit 3
    assert await next_chunk(rt.redis, key, 4, 5) == ([], -1)
    assert await next_chunk(rt.redis, key, 0, 5) == ([3], -1)


async def test_no_audience(rt: Runtime) -> None:
    assert await next_chunk(rt.redis, rt.keys.dispatch_audience("NONE"), 0, 10) == ([], -1)
