"""Which area map the data in Redis is on, against the one config/ puts in force.

Subscribers, incidents and reporter credentials name areas by code, and codes belong to one
map. Workers and web servers refuse to start when the data is on another map than the one in
force: a subscriber of a ward the map lacks would silently receive nothing. `loa areas
migrate` moves the data and records the new map (coordinator.migrations.area_moves).

Redis records its map once a worker or web server has started on it. Data written before
that (by a Loa from before maps had versions, or by `loa subscribers import` before the
first worker) is read for the codes it names: all of the map in force, it is on that map;
else on `unversioned`, the map config/areas.yaml names for such data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.migrations.version import literal_pattern
from coordinator.state import Redis


class AreaMapMismatch(LoaError):
    """The data in Redis is on another area map than the one in force."""


@dataclass(frozen=True)
class MapChoice:
    """The map in force, the map of data from before maps had versions, and the codes of
    each (to tell which one data without a recorded map is on)."""

    in_force: str
    unversioned: str | None
    codes: dict[str, frozenset[str]]

    def of_codes(self, found: set[str]) -> str:
        """The map data naming `found` is on: the one in force when it has them all, else
        the unversioned one (when there is one). Pure."""
        if found <= self.codes.get(self.in_force, frozenset()) or not self.unversioned:
            return self.in_force
        return self.unversioned


@dataclass(frozen=True)
class DataMap:
    """The map the data is on (None: an empty Redis) and whether Redis says so itself
    (else read from the codes the data names)."""

    name: str | None
    recorded: bool

    def advice(self, in_force: str) -> str:
        """What to do when the data is not on the map in force; "" when it is. Pure."""
        if self.name is None or self.name == in_force:
            return ""
        return (f"the data in Redis is on the area map {self.name!r}, config/ puts "
                f"{in_force!r} in force: run `loa areas migrate --from {self.name} --to "
                f"{in_force}` (see docs/areas.md), or set LOA_AREA_MAP={self.name}")


async def codes_in_data(redis: Redis, keys: Keys) -> set[str]:
    """The area codes the data names: subscribers' (their index bitmaps, or sets in a
    layout before 3), open incidents' (their correlation keys, `kind:area`) and reporter
    credentials' scopes. One SCAN of the key space: made only while Redis records no map."""
    areas, opened = keys.subs_bits("area", ""), keys.open_incident("")
    sets = f"{keys.prefix}:subs:area:"
    found: set[str] = set()
    async for key in redis.scan_iter(match=literal_pattern(keys.prefix) + ":*", count=1000):
        if key.startswith(sets) or (key.startswith(areas) and await redis.bitcount(key)):
            found.add(key.removeprefix(areas).removeprefix(sets))  # (a bitmap all cleared:
            # nobody is there any more)
        elif key.startswith(opened):
            kind, _, rest = key.removeprefix(opened).partition(":")
            if kind != "claims" and rest:  # claims are keyed by what they say, not area
                found.add(rest.split(":")[0])
    digests = list((await redis.hgetall(keys.token_names())).values())
    for raw in await redis.mget([keys.token(d) for d in digests]) if digests else []:
        area = json.loads(raw).get("area") if raw else None
        if area:
            found.add(area)
    return found


async def read_data_map(redis: Redis, keys: Keys, choice: MapChoice) -> DataMap:
    """The map the data is on: recorded, else the one its codes are of, else None (no
    data)."""
    recorded: str | None = await redis.get(keys.area_map())
    if recorded:
        return DataMap(recorded, True)
    found = await codes_in_data(redis, keys)
    return DataMap(choice.of_codes(found) if found else None, False)


async def check_area_map(redis: Redis, keys: Keys, choice: MapChoice) -> DataMap:
    """Record the map in force on a Redis that records none and whose data (if any) is on
    it; raises AreaMapMismatch when the data is on another map."""
    found = await read_data_map(redis, keys, choice)
    in_force = choice.in_force
    if not found.recorded and found.name in (None, in_force):
        await redis.set(keys.area_map(), in_force, nx=True)
        found = DataMap(await redis.get(keys.area_map()), True)
    problem = found.advice(in_force)
    if problem:
        raise AreaMapMismatch(problem)
    return found


async def record_area_map(redis: Redis, keys: Keys, name: str) -> None:
    """Say the data is on `name` (after `loa areas migrate`)."""
    await redis.set(keys.area_map(), name)
