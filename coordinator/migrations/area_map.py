"""Which area map the data in Redis is on, against the one config/ puts in force.

Subscribers, incidents and reporter credentials name areas by code, and codes belong to one
map. Workers and web servers refuse to start when the data is on another map than the one in
force: a subscriber of a ward the map lacks would silently receive nothing. `loa areas
migrate` moves the data and records the new map (coordinator.migrations.area_moves).
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.state import Redis


class AreaMapMismatch(LoaError):
    """The data in Redis is on another area map than the one in force."""


@dataclass(frozen=True)
class DataMap:
    """The map the data is on (None: an empty Redis) and whether Redis says so itself
    (else taken from `unversioned` in config/areas.yaml)."""

    name: str | None
    recorded: bool

    def advice(self, in_force: str) -> str:
        """What to do when the data is not on the map in force; "" when it is. Pure."""
        if self.name is None or self.name == in_force:
            return ""
        return (f"the data in Redis is on the area map {self.name!r}, config/ puts "
                f"{in_force!r} in force: run `loa areas migrate --from {self.name} --to "
                f"{in_force}` (see docs/areas.md), or set LOA_AREA_MAP={self.name}")


async def holds_area_data(redis: Redis, keys: Keys) -> bool:
    """Whether Redis holds anything named by area: subscribers or incidents."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.scard(keys.subs_all())
        pipe.zcard(keys.incidents())
        subscribers, incidents = await pipe.execute()
    return bool(subscribers or incidents)


async def read_data_map(redis: Redis, keys: Keys, unversioned: str | None) -> DataMap:
    """The map the data is on: recorded, else `unversioned` when there is data from before
    maps had versions, else None."""
    recorded: str | None = await redis.get(keys.area_map())
    if recorded:
        return DataMap(recorded, True)
    if unversioned and await holds_area_data(redis, keys):
        return DataMap(unversioned, False)
    return DataMap(None, False)


async def check_area_map(redis: Redis, keys: Keys, in_force: str,
                         unversioned: str | None) -> DataMap:
    """Record the map in force on a Redis that has none yet and no data from before maps
    had versions; raises AreaMapMismatch when the data is on another map."""
    found = await read_data_map(redis, keys, unversioned)
    if found.name is None:
        await redis.set(keys.area_map(), in_force, nx=True)
        found = DataMap(await redis.get(keys.area_map()), True)
    problem = found.advice(in_force)
    if problem:
        raise AreaMapMismatch(problem)
    return found


async def record_area_map(redis: Redis, keys: Keys, name: str) -> None:
    """Say the data is on `name` (after `loa areas migrate`)."""
    await redis.set(keys.area_map(), name)
