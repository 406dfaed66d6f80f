"""The city: its areas (a tree), its departments and their approvers, its duty officers.

Loaded from ``config/areas.yaml``, ``config/departments.yaml``, ``config/kinds.yaml`` and
``config/languages.yaml``. Names are filled in for every declared language at load, each
from the first language of its fallback order that the file gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from coordinator.errors import ConfigError
from coordinator.events import Slug
from coordinator.languages import Languages, load_languages
from coordinator.translations import Catalogs, load_catalogs
from coordinator.yamlsource import YamlSource, parse_problem, validate_source

Names = dict[str, str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AreaNode(_Strict):
    """An area in config/areas.yaml; children are inside it."""

    code: Slug
    name: Names
    # official codes of the area, e.g. {GSO: "001"} (Vietnam's General Statistics Office);
    # the CAP feed publishes them as <geocode>s
    geocode: dict[str, str] = Field(default_factory=dict)
    children: list[AreaNode] = Field(default_factory=list)


class AreasFile(_Strict):
    """config/areas.yaml."""

    version: Literal[1]
    areas: list[AreaNode]


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
    """A window in which someone cannot be asked (leave, travel, sickness)."""

    start: datetime = Field(alias="from")
    until: datetime
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
class Area:
    """An area with its place in the tree."""

    code: str
    name: Names
    parent: str | None
    depth: int
    geocode: dict[str, str] = field(default_factory=dict)

    def name_in(self, language: str) -> str:
        """The area's name in a language (its fallback's, filled in at load; else the
        code)."""
        return self.name.get(language) or self.code


@dataclass(frozen=True)
class City:
    """Areas, departments and people, indexed."""

    areas: dict[str, Area]
    departments: dict[str, Department]
    duty_officers: dict[str, Person]
    languages: Languages
    catalogs: Catalogs
    people: dict[str, Person] = field(default_factory=dict)
    kinds: dict[str, Kind] = field(default_factory=dict)
    duty_supervisors: dict[str, Person] = field(default_factory=dict)

    def ancestors(self, code: str) -> list[str]:
        """The area and every area that contains it, innermost first."""
        chain = []
        current: str | None = code
        while current is not None and current in self.areas:
            chain.append(current)
            current = self.areas[current].parent
        return chain

    def descendants(self, code: str) -> list[str]:
        """Every area inside `code` (not `code` itself)."""
        return [a for a in self.areas if a != code and code in self.ancestors(a)]

    def contains(self, outer: str, inner: str) -> bool:
        """True when `inner` is `outer` or lies inside it."""
        return outer in self.ancestors(inner)

    def department_of(self, person_id: str) -> Department | None:
        """The department an approver belongs to."""
        for dep in self.departments.values():
            if any(p.id == person_id for p in dep.approvers):
                return dep
        return None


def _flatten(nodes: list[AreaNode], parent: str | None, depth: int, out: dict[str, Area],
             languages: Languages) -> None:
    for node in nodes:
        if node.code in out:
            raise ConfigError(f"area code {node.code!r} appears twice")
        out[node.code] = Area(node.code, filled(node.name, languages), parent, depth,
                              dict(node.geocode))
        _flatten(node.children, node.code, depth + 1, out, languages)


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


def _read(path: Path) -> YamlSource:
    try:
        return YamlSource.read(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(parse_problem(path, exc)) from exc


def load_city(config_dir: Path) -> City:
    """Load config/; raises ConfigError naming file, line and field."""
    languages = load_languages(_read(config_dir / "languages.yaml"))
    areas_src = _read(config_dir / "areas.yaml")
    areas_file = validate_source(areas_src, AreasFile)
    if isinstance(areas_file, list):
        raise ConfigError("\n".join(areas_file))
    deps_src = _read(config_dir / "departments.yaml")
    deps_file = validate_source(deps_src, DepartmentsFile)
    if isinstance(deps_file, list):
        raise ConfigError("\n".join(deps_file))
    kinds_src = _read(config_dir / "kinds.yaml")
    kinds_file = validate_source(kinds_src, KindsFile)
    if isinstance(kinds_file, list):
        raise ConfigError("\n".join(kinds_file))
    kinds = {k.id: k.model_copy(update={"name": filled(k.name, languages)})
             for k in kinds_file.kinds}
    if len(kinds) != len(kinds_file.kinds):
        raise ConfigError(f"{kinds_src.path}: a kind id appears twice")
    areas: dict[str, Area] = {}
    _flatten(areas_file.areas, None, 1, areas, languages)
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
        areas=areas,
        departments={d.id: d.model_copy(update={"name": filled(d.name, languages)})
                     for d in deps_file.departments},
        duty_officers={p.id: p for p in deps_file.duty_officers},
        languages=languages,
        catalogs=load_catalogs(config_dir / "locale", languages),
        people=people,
        kinds=kinds,
        duty_supervisors=_known(deps_src, people, deps_file.duty_supervisors),
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
