"""The city's area maps: which one is in force, and the areas of each.

``config/areas.yaml`` names the map in force (``map:``). Each map is a file
``config/maps/NAME.yaml``, in one of two forms:

- ``version: 1``, a tree typed by hand: areas with children (the form ``config/areas.yaml``
  itself had before maps had versions, still read there as the one map ``areas``);
- ``version: 2``, the official units of a province read from a maintained dataset (their
  names and official codes), plus what the dataset lacks: names in other languages and the
  groupings people still use to talk about places (former districts, river basins,
  flood-prone zones), each a named set of units that playbooks and subscribers can target.

A grouping is an area like any other; a unit belongs to the city and to every grouping that
lists it, so the areas form a graph rather than a tree (`Area.within`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from coordinator.errors import ConfigError
from coordinator.events import Slug
from coordinator.languages import Languages, without_diacritics
from coordinator.yamlsource import YamlSource, parse_problem, validate_source

Names = dict[str, str]
LEGACY_MAP = "areas"  # the name of the one map of a config/areas.yaml without versions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AreaNode(_Strict):
    """An area of a tree map; children are inside it."""

    code: Slug
    name: Names
    # official codes of the area, e.g. {GSO: "001"} (Vietnam's General Statistics Office);
    # the CAP feed publishes them as <geocode>s
    geocode: dict[str, str] = Field(default_factory=dict)
    children: list[AreaNode] = Field(default_factory=list)


class TreeMap(_Strict):
    """A map typed by hand (version 1)."""

    version: Literal[1]
    areas: list[AreaNode]


class CityNode(_Strict):
    """The city a dataset map covers."""

    code: Slug
    name: Names
    geocode: dict[str, str] = Field(default_factory=dict)


class Units(_Strict):
    """Where a map's units come from, and how they are named and coded."""

    dataset: Literal["vietnam-provinces"]
    province: int  # the dataset's code of the province (Hanoi: 1)
    geocode: str = "GSO"  # the CAP valueName of the units' official codes
    # per language, the name of a unit from the dataset's: `{name}` as the dataset writes
    # it, `{short}` without its type, `{ascii}` the short name without diacritics, `{type}`
    # the type's word (`types`); a language without one reads its fallback's
    names: dict[str, str] = Field(default_factory=dict)
    types: dict[str, Names] = Field(default_factory=dict)  # dataset's type -> word per language
    renamed: dict[Slug, Names] = Field(default_factory=dict)  # a unit's own names, by code
    # a unit's official code where the dataset's is not the one in force, by our code
    recoded: dict[Slug, str] = Field(default_factory=dict)
    label: Names = Field(default_factory=dict)  # what lists call them ("Wards and communes")


class Grouping(_Strict):
    """A named set of units (a former district, a river basin, a flood-prone zone)."""

    code: Slug
    name: Names
    units: list[Slug] = Field(min_length=1)


class DatasetMap(_Strict):
    """A map of official units from a dataset (version 2)."""

    version: Literal[2]
    city: CityNode
    units: Units
    groupings: list[Grouping] = Field(default_factory=list)
    groupings_label: Names = Field(default_factory=dict)  # what lists call the groupings


class AreasConfig(_Strict):
    """config/areas.yaml: the map in force."""

    version: Literal[2]
    map: Slug
    # the map the data of a Loa from before maps had versions is on (when Redis has data
    # but no map recorded)
    unversioned: Slug | None = None


@dataclass(frozen=True)
class Area:
    """An area: its tree parent (the city, for a unit of a dataset map), how deep it lies
    (the city 1, a grouping 2, a unit 3), its official codes, and for a unit the groupings
    it belongs to; for a grouping, its units."""

    code: str
    name: Names
    parent: str | None
    depth: int
    geocode: tuple[tuple[str, str], ...] = ()
    within: tuple[str, ...] = ()
    members: tuple[str, ...] = field(default=())

    def name_in(self, language: str) -> str:
        """The area's name in a language (its fallback's, filled in at load; else the
        code)."""
        return self.name.get(language) or self.code


@dataclass(frozen=True)
class AreaMap:
    """One version of the city's map."""

    name: str
    areas: dict[str, Area]
    # for a dataset map, what lists call its groupings and its units, by language
    labels: dict[str, Names] = field(default_factory=dict)
    _sections: dict[str, list[tuple[str, list[Area]]]] = field(
        default_factory=dict, compare=False, repr=False)  # by language, made once

    def sections(self, language: str) -> list[tuple[str, list[Area]]]:
        """The areas in the order a list offers them, in sections (label, areas): a tree
        in its own order, in one section without a label; a dataset map's city, then its
        groupings, then its units, each by name."""
        if language not in self._sections:
            self._sections[language] = self._sorted(language)
        return self._sections[language]

    def _sorted(self, language: str) -> list[tuple[str, list[Area]]]:
        if not self.labels:
            return [("", list(self.areas.values()))]

        def by_name(depth: int) -> list[Area]:
            found = [a for a in self.areas.values() if a.depth == depth]
            return sorted(found, key=lambda a: without_diacritics(a.name_in(language)).casefold())

        return [("", by_name(1)),
                *[(self.labels[part].get(language, part), by_name(depth))
                  for part, depth in (("groupings", 2), ("units", 3)) if by_name(depth)]]


def filled(names: Names, languages: Languages) -> Names:
    """`names` with an entry for every declared language: its own, else the first of its
    fallback order the file gives (languages the file gives and the city does not declare
    stay as written)."""
    out = dict(names)
    for tag in languages.tags:
        found = languages.best(tag, list(names))
        if tag not in out and found is not None:
            out[tag] = names[found]
    return out


def read_yaml(path: Path) -> YamlSource:
    """A config file; raises ConfigError naming the file (and line) when it cannot be read."""
    try:
        return YamlSource.read(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(parse_problem(path, exc)) from exc


def areas_config(config_dir: Path) -> AreasConfig:
    """config/areas.yaml; a file of the old form (a tree, version 1) is the map `areas`."""
    source = read_yaml(config_dir / "areas.yaml")
    if isinstance(source.data, dict) and source.data.get("version") == 1:
        return AreasConfig(version=2, map=LEGACY_MAP)
    found = validate_source(source, AreasConfig)
    if isinstance(found, list):
        raise ConfigError("\n".join(found))
    return found


def map_names(config_dir: Path) -> list[str]:
    """The maps config/ has, by name."""
    names = sorted(p.stem for p in (config_dir / "maps").glob("*.yaml"))
    return names or ([LEGACY_MAP] if areas_config(config_dir).map == LEGACY_MAP else [])


def load_area_map(config_dir: Path, languages: Languages, name: str | None = None) -> AreaMap:
    """The map `name` (else the one in force); raises ConfigError naming file, line and
    field."""
    chosen = name or areas_config(config_dir).map
    if chosen == LEGACY_MAP and areas_config(config_dir).map == LEGACY_MAP:
        path = config_dir / "areas.yaml"
    else:
        path = config_dir / "maps" / f"{chosen}.yaml"
        if not path.is_file():
            raise ConfigError(f"{path}: no area map {chosen!r} (maps: "
                              f"{', '.join(map_names(config_dir)) or 'none'})")
    source = read_yaml(path)
    version = source.data.get("version") if isinstance(source.data, dict) else None
    model: type[TreeMap] | type[DatasetMap] = DatasetMap if version == 2 else TreeMap
    parsed = validate_source(source, model)
    if isinstance(parsed, list):
        raise ConfigError("\n".join(parsed))
    areas: dict[str, Area] = {}
    if isinstance(parsed, TreeMap):
        _flatten(source, parsed.areas, None, 1, areas, languages)
        return AreaMap(chosen, areas)
    _from_dataset(source, parsed, areas, languages)
    return AreaMap(chosen, areas, {"groupings": filled(parsed.groupings_label, languages),
                                   "units": filled(parsed.units.label, languages)})


def _flatten(source: YamlSource, nodes: list[AreaNode], parent: str | None, depth: int,
             out: dict[str, Area], languages: Languages) -> None:
    for node in nodes:
        if node.code in out:
            raise ConfigError(f"{source.path}: area code {node.code!r} appears twice")
        out[node.code] = Area(node.code, filled(node.name, languages), parent, depth,
                              tuple(sorted(node.geocode.items())),
                              (parent,) if parent else ())
        _flatten(source, node.children, node.code, depth + 1, out, languages)


def _from_dataset(source: YamlSource, spec: DatasetMap, out: dict[str, Area],
                  languages: Languages) -> None:
    """The city, its official units (from the dataset) and the groupings."""
    city = spec.city
    out[city.code] = Area(city.code, filled(city.name, languages), None, 1,
                          tuple(sorted(city.geocode.items())))
    for code, names, official in dataset_units(spec):
        names.update(spec.units.renamed.get(code, {}))
        official = spec.units.recoded.get(code, official)
        out[code] = Area(code, filled(names, languages), city.code, 3,
                         ((spec.units.geocode, official),), (city.code,))
    if not out.keys() - {city.code}:
        raise ConfigError(f"{source.where(['units', 'province'])}: units.province: the "
                          f"dataset has no units in province {spec.units.province}")
    unknown = [f"{source.where(['units', field, code])}: units.{field}: unknown unit {code!r}"
               for field in ("renamed", "recoded")
               for code in getattr(spec.units, field) if code not in out]
    member_of: dict[str, list[str]] = {}
    seen: set[str] = set()
    for i, group in enumerate(spec.groupings):
        if group.code in out or group.code in seen:
            unknown.append(f"{source.where(['groupings', i, 'code'])}: groupings[{i}].code: "
                           f"{group.code!r} is already an area")
        seen.add(group.code)
        for j, unit in enumerate(group.units):
            if unit not in out or out[unit].depth != 3:
                unknown.append(f"{source.where(['groupings', i, 'units', j])}: groupings[{i}]"
                               f".units[{j}]: unknown unit {unit!r}")
            member_of.setdefault(unit, []).append(group.code)
    if unknown:
        raise ConfigError("\n".join(unknown))
    for unit, groups in member_of.items():
        area = out[unit]
        out[unit] = Area(area.code, area.name, area.parent, area.depth, area.geocode,
                         (*area.within, *groups))
    for group in spec.groupings:
        codes = tuple(dict.fromkeys(group.units))
        out[group.code] = Area(group.code, filled(group.name, languages), city.code, 2,
                               tuple((spec.units.geocode, c) for area in codes
                                     for _, c in out[area].geocode),
                               (city.code,), codes)


def dataset_units(spec: DatasetMap) -> list[tuple[str, Names, str]]:
    """(our code, names per language, official code) of each unit of the province: the
    code is the city's and the dataset's own name for the unit (`hn-phuong-ba-dinh`)."""
    from vietnam_provinces import Ward

    units = []
    for ward in Ward.iter_by_province(spec.units.province):  # type: ignore[arg-type]
        kind = ward.division_type.value
        short = _without_type(ward.name, kind)
        words = {"name": ward.name, "short": short, "ascii": without_diacritics(short)}
        names = {tag: template.format(**words, type=spec.units.types.get(kind, {}).get(tag, kind))
                 for tag, template in spec.units.names.items()}
        code = f"{spec.city.code}-{ward.codename.replace('_', '-')}"
        units.append((code, names, f"{int(ward.code):05d}"))
    return units


def _without_type(name: str, kind: str) -> str:
    """`Phường Ba Đình` -> `Ba Đình` (the type is the name's first words)."""
    head = name[:len(kind)]
    return name[len(kind):].strip() if head.casefold() == kind.casefold() else name
