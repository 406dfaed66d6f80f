"""`loa areas ...`: the city's area maps, and moving the data from one to the next."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from coordinator.cli.common import JsonOpt, fail, out, print_json, with_redis
from coordinator.errors import LoaError
from coordinator.keys import Keys
from coordinator.settings import Settings, load_settings
from coordinator.state import Redis

if TYPE_CHECKING:
    from coordinator.migrations.area_map import MapChoice

areas_app = typer.Typer(help="The city's area maps, and moving data between them.",
                        no_args_is_help=True)


@areas_app.command("maps")
def areas_maps(as_json: JsonOpt = False) -> None:
    """The maps config/ has, the one in force, and the one the data in Redis is on."""
    from coordinator.area_maps import load_area_map, map_names
    from coordinator.languages import load_languages
    from coordinator.migrations.area_map import read_data_map
    from coordinator.migrations.startup import maps_of
    from coordinator.yamlsource import YamlSource

    settings = load_settings()
    try:
        choice = maps_of(settings)
        languages = load_languages(YamlSource.read(settings.config_dir / "languages.yaml"))
        maps = {name: load_area_map(settings.config_dir, languages, name)
                for name in map_names(settings.config_dir)}
    except LoaError as exc:
        raise fail(str(exc)) from exc
    in_force = choice.in_force
    found = with_redis(lambda r, k, s: read_data_map(r, k, choice))
    rows = [{"map": name, "areas": len(m.areas),
             "groupings": sum(1 for a in m.areas.values() if a.members),
             "in_force": name == in_force, "data": name == found.name}
            for name, m in maps.items()]
    if as_json:
        print_json({"maps": rows, "in_force": in_force, "data": found.name})
        return
    for row in rows:
        marks = [w for w, on in (("in force", row["in_force"]), ("the data's", row["data"]))
                 if on]
        out.print(f"{row['map']}: {row['areas']} areas, {row['groupings']} groupings"
                  + (f"  ({', '.join(marks)})" if marks else ""), highlight=False)
    if found.name is None:
        out.print("the data: none yet (the first worker records the map in force)")
    elif found.name != in_force:
        out.print(found.advice(in_force), highlight=False, soft_wrap=True)


async def _refusal(redis: Redis, keys: Keys, choice: MapChoice, source: str, target: str
                   ) -> str:
    """Why the data cannot be moved from `source` ("" when it can): a layout too old for
    this Loa, or data on a third map."""
    from coordinator.migrations.area_map import read_data_map
    from coordinator.migrations.startup import check_layout

    try:
        await check_layout(redis, keys)
    except LoaError as exc:
        return str(exc)
    found = await read_data_map(redis, keys, choice)
    if found.name not in (source, target, None):  # on target: finish what was left
        return f"--from: the data is on {found.name!r}, not {source!r}"
    return ""


@areas_app.command("migrate")
def areas_migrate(
    source: Annotated[str, typer.Option("--from", help="the map the data is on now")],
    target: Annotated[str, typer.Option("--to", help="the map to move it to")],
    mapping: Annotated[Path | None, typer.Option(
        help="the mapping file (default: config/maps/FROM-to-TO.csv)")] = None,
    choose: Annotated[list[str] | None, typer.Option(
        help="OLD=NEW: the one new area open incidents and credentials of a split area "
             "take; repeat for more")] = None,
    apply: Annotated[bool, typer.Option(
        "--apply/--dry-run",
        help="make the changes (default: a dry run that shows what would change)")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Move subscribers, open incidents, credentials and playbooks from one area map to
    another by a mapping file, and report who moved where and what could not be mapped
    (left unchanged). Stop workers and web servers first; running it again changes
    nothing. Then name the new map in config/areas.yaml."""
    from coordinator.area_mapping import mapping_path, read_mapping
    from coordinator.area_maps import load_area_map
    from coordinator.languages import load_languages
    from coordinator.migrations.area_moves import Mover, MoveReport, move_areas
    from coordinator.migrations.startup import maps_of
    from coordinator.yamlsource import YamlSource

    settings = load_settings()
    chosen = _choices(choose or [])
    try:
        languages = load_languages(YamlSource.read(settings.config_dir / "languages.yaml"))
        old = load_area_map(settings.config_dir, languages, source)
        new = load_area_map(settings.config_dir, languages, target)
        table = read_mapping(mapping or mapping_path(settings.config_dir, source, target),
                             old, new)
    except LoaError as exc:
        raise fail(str(exc)) from exc
    unknown = [f"--choose {k}={v}: {v!r} is not one of {', '.join(table.targets(k))}"
               for k, v in chosen.items() if v not in table.targets(k)]
    if unknown:
        raise fail("; ".join(unknown))
    try:
        choice = maps_of(settings)
    except LoaError as exc:
        raise fail(str(exc)) from exc

    async def work(redis: Redis, keys: Keys, s: Settings) -> MoveReport | str:
        refused = await _refusal(redis, keys, choice, source, target)
        if refused:
            return refused
        mover = Mover(f"operator:{getpass.getuser()}", "cli") if apply else None
        return await move_areas(redis, keys, table, s.playbooks_dir, chosen, mover)

    done = with_redis(work)
    if isinstance(done, str):
        raise fail(done)
    lines = done.lines(source, target)
    if as_json:
        print_json({"applied": apply, "recorded": done.recorded, "lines": lines})
    else:
        for line in lines:
            out.print(line, highlight=False, soft_wrap=True)
    if done.blocked or done.subscribers_unmapped or done.playbooks_unmapped:
        raise typer.Exit(1)


def _choices(given: list[str]) -> dict[str, str]:
    """`OLD=NEW` options as a dict; exits naming a malformed one."""
    bad = [g for g in given if g.count("=") != 1]
    if bad:
        raise fail(f"--choose: {bad[0]!r} is not OLD=NEW")
    return dict(g.split("=", 1) for g in given)
