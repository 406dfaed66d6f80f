"""The city: its areas, its departments and their approvers, its duty officers.

Loaded from ``config/areas.yaml`` (the area map in force: coordinator.area_maps),
``config/departments.yaml``, ``config/kinds.yaml`` and ``config/languages.yaml``. Names are
filled in for every declared language at load, each from the first language of its fallback
order that the file gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from coordinator.area_maps import (
    Area,
    AreaMap,
    Names,
    filled,
    load_area_map,
    map_names,
    read_yaml,
)
from coordinator.errors import ConfigError
from coordinator.events import Slug
from coordinator.languages import Languages, load_languages
from coordinator.translations import Catalogs, load_catalogs
from coordinator.yamlsource import YamlSource, validate_source

__all__ = ["Area", "City", "Department", "Kind", "Names", "Person", "filled", "load_city"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Kind(_Strict):
    """A kind of report the city takes (`flood`, `fire`, ...); subscribers follow it as a
    topic of the same id."""

    id: Slug
    name: Names
    claims: bool = False  # reports of it say what false claim is spreading (misinformation)


class KindsFile(_Strict):
    """config/kinds.yaml."""

    version: Literal[1]
    kinds: list[Kind] = Field(min_length=1)


class Absence(_Strict):
    """A window in which someone cannot be asked (leave, travel, sickness). Its ends carry
    their UTC offset (`2026-12-22T00:00:00+07:00`): one without is refused at load, naming
    the line (compared with the time now, it failed every escalation into its level)."""

    start: AwareDatetime = Field(alias="from")
    until: AwareDatetime
    note: str = ""


class Person(_Strict):
    """Someone Loa may ask or tell: a duty officer or an approver."""

    id: Slug
    name: str
    phone: str
    email: str
    title: Names = Field(default_factory=dict)
    level: int = 0
    preferred_channel: Literal["sms", "email", "web"] = "web"
    delegate: Slug | None = None
    absent: list[Absence] = Field(default_factory=list)

    def away_until(self, now: datetime) -> datetime | None:
        """The end of the absence `now` falls in, or None when the person is available."""
        for window in self.absent:
            if window.start <= now < window.until:
                return window.until
        return None


class Department(_Strict):
    """A department and its approvers, by level (1 is asked first)."""

    id: Slug
    name: Names
    approvers: list[Person]

    def at_level(self, level: int) -> list[Person]:
        """The approvers of this department at one level."""
        return [p for p in self.approvers if p.level == level]


class DepartmentsFile(_Strict):
    """config/departments.yaml."""

    version: Literal[1]
    duty_officers: list[Person]
    # who hears of a promised update about to be broken, besides the duty officers
    duty_supervisors: list[Slug] = Field(default_factory=list)
    departments: list[Department]


@dataclass(frozen=True)
class City:
    """Areas, departments and people, indexed."""

    areas: dict[str, Area]  # of the map in force
    departments: dict[str, Department]
    duty_officers: dict[str, Person]
    languages: Languages
    catalogs: Catalogs
    people: dict[str, Person] = field(default_factory=dict)
    kinds: dict[str, Kind] = field(default_factory=dict)
    duty_supervisors: dict[str, Person] = field(default_factory=dict)
    area_map: AreaMap = field(default_factory=lambda: AreaMap("", {}))  # in force
    # the areas of the other maps config/ has (a statement of the past names its own)
    former_areas: dict[str, Area] = field(default_factory=dict)

    @cached_property
    def known_areas(self) -> dict[str, Area]:
        """The areas of every map, those in force first (to name what the past names)."""
        return {**self.areas, **self.former_areas}

    def unknown_area(self, code: str) -> str:
        """Why an area code is refused, naming the map in force (and the earlier map's
        code someone may still be using)."""
        if code in self.former_areas:
            return (f"unknown area {code!r}: an area of an earlier map, not of "
                    f"{self.area_map.name}, the map in force (see docs/areas.md)")
        return f"unknown area {code!r} (the map in force: {self.area_map.name})"

    def area_name(self, code: str, language: str) -> str:
        """An area's name, of the map in force or an earlier one; else its code."""
        area = self.areas.get(code) or self.former_areas.get(code)
        return area.name_in(language) if area is not None else code

    def ancestors(self, code: str) -> list[str]:
        """The area and every area that contains it (its groupings, the city), innermost
        first; [] for an area the map lacks."""
        return list(self._containing.get(code, ()))

    def descendants(self, code: str) -> list[str]:
        """Every area inside `code` (not `code` itself)."""
        return [a for a, up in self._containing.items() if a != code and code in up]

    def overlapping(self, code: str) -> list[str]:
        """Every area sharing ground with `code`: those containing it, those inside it, and
        the groupings that share one of its units. In a tree, the first two."""
        inner = [code, *self.descendants(code)]
        found = [a for c in inner for a in self.ancestors(c)]
        return list(dict.fromkeys([*self.ancestors(code), *found]))

    @cached_property
    def _containing(self) -> dict[str, tuple[str, ...]]:
        """Each area -> itself and the areas containing it, innermost first."""
        out: dict[str, tuple[str, ...]] = {}
        for code in self.areas:
            chain: list[str] = []
            todo = [code]
            while todo:
                current = todo.pop(0)
                if current not in chain:
                    chain.append(current)
                    todo += [c for c in self.areas[current].within if c in self.areas]
            out[code] = tuple(sorted(chain, key=lambda c: -self.areas[c].depth))
        return out

    def contains(self, outer: str, inner: str) -> bool:
        """True when `inner` is `outer` or lies inside it."""
        return outer in self.ancestors(inner)

    def department_of(self, person_id: str) -> Department | None:
        """The department an approver belongs to."""
        for dep in self.departments.values():
            if any(p.id == person_id for p in dep.approvers):
                return dep
        return None


def load_city(config_dir: Path, area_map: str | None = None) -> City:
    """Load config/ with the area map `area_map` (else the one config/areas.yaml names);
    raises ConfigError naming file, line and field."""
    languages = load_languages(read_yaml(config_dir / "languages.yaml"))
    chosen = load_area_map(config_dir, languages, area_map)
    deps_src = read_yaml(config_dir / "departments.yaml")
    deps_file = validate_source(deps_src, DepartmentsFile)
    if isinstance(deps_file, list):
        raise ConfigError("\n".join(deps_file))
    kinds_src = read_yaml(config_dir / "kinds.yaml")
    kinds_file = validate_source(kinds_src, KindsFile)
    if isinstance(kinds_file, list):
        raise ConfigError("\n".join(kinds_file))
    kinds = {k.id: k.model_copy(update={"name": filled(k.name, languages)})
             for k in kinds_file.kinds}
    if len(kinds) != len(kinds_file.kinds):
        raise ConfigError(f"{kinds_src.path}: a kind id appears twice")
    people: dict[str, Person] = {}
    approvers = (p for d in deps_file.departments for p in d.approvers)
    for person in [*deps_file.duty_officers, *approvers]:
        if person.id in people:
            raise ConfigError(f"{deps_src.path}: person id {person.id!r} appears twice")
        people[person.id] = person
    for person in people.values():
        _check_contacts(deps_src, person)
        if person.delegate is not None and person.delegate not in people:
            raise ConfigError(f"{deps_src.path}:{_person_line(deps_src, person.id)}: "
                              f"{person.id}.delegate: unknown person {person.delegate!r}")
    return City(
        areas=chosen.areas,
        departments={d.id: d.model_copy(update={"name": filled(d.name, languages)})
                     for d in deps_file.departments},
        duty_officers={p.id: p for p in deps_file.duty_officers},
        languages=languages,
        catalogs=load_catalogs(config_dir / "locale", languages),
        people=people,
        kinds=kinds,
        duty_supervisors=_known(deps_src, people, deps_file.duty_supervisors),
        area_map=chosen,
        former_areas={code: area for name in map_names(config_dir) if name != chosen.name
                      for code, area in load_area_map(config_dir, languages, name).areas.items()
                      if code not in chosen.areas},
    )


def _known(source: YamlSource, people: dict[str, Person], ids: list[str]
           ) -> dict[str, Person]:
    """The people named (the duty supervisors); raises ConfigError for one not declared."""
    unknown = [i for i in ids if i not in people]
    if unknown:
        raise ConfigError(f"{source.path}: duty_supervisors: unknown person {unknown[0]!r}")
    return {i: people[i] for i in ids}


def _person_line(source: YamlSource, person_id: str) -> int:
    """The line of a person's entry, for error messages."""
    for number, line in enumerate(source.text.splitlines(), start=1):
        if line.strip() in (f"- id: {person_id}", f"id: {person_id}"):
            return number
    return 1


def _check_contacts(source: YamlSource, person: Person) -> None:
    """A phone must be an E.164 number as written, and an email address valid."""
    from channels.contacts import InvalidContact, e164, email_address

    where = f"{source.path}:{_person_line(source, person.id)}"
    try:
        if e164(person.phone) != person.phone:
            raise InvalidContact(f"{person.phone!r} is not written in E.164 "
                                 f"(use {e164(person.phone)!r})")
        email_address(person.email)
    except InvalidContact as exc:
        raise ConfigError(f"{where}: {person.id}: {exc}") from exc
