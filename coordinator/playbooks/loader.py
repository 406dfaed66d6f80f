"""Load playbooks from YAML; refuse a broken one with file, line and field named."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

import yaml

from coordinator.city import City
from coordinator.errors import PlaybookError, TemplateRenderError
from coordinator.events import Severity
from coordinator.playbooks.models import Playbook
from coordinator.playbooks.render import IncidentFacts, render_draft
from coordinator.yamlsource import YamlSource, parse_problem, validate_source

# Long enough to show a template's worst case when checking SMS segment budgets.
_SAMPLE_TITLE = "Ngập sâu 0,5 m trên các tuyến phố, nhiều phương tiện chết máy giữa đường"


def check_playbook_file(path: Path, city: City) -> tuple[Playbook | None, list[str]]:
    """The playbook and the problems found in it (empty when it is good)."""
    try:
        source = YamlSource.read(path)
    except OSError as exc:
        return None, [f"{path}: cannot read: {exc.strerror}"]
    except yaml.YAMLError as exc:
        return None, [parse_problem(path, exc)]
    if not isinstance(source.data, dict):
        return None, [f"{path}:1: (document): must be a mapping of playbook fields"]
    parsed = validate_source(source, Playbook)
    if isinstance(parsed, list):
        return None, parsed
    problems = _semantic_problems(source, parsed, city)
    if parsed.id != path.stem:
        problems.append(f"{source.where(['id'])}: id: {parsed.id!r} must equal the file name "
                        f"{path.stem!r}")
    return (parsed if not problems else None), problems


def _semantic_problems(src: YamlSource, pb: Playbook, city: City) -> list[str]:
    out = []
    if pb.fallback and (pb.match is not None or pb.approval is not None):
        out.append(f"{src.where(['fallback'])}: fallback: a fallback playbook has no `match` "
                   "and no `approval`")
    if not pb.fallback:
        out += [f"{src.where([])}: {name}: is required (unless `fallback: true`)"
                for name in ("match", "approval") if getattr(pb, name) is None]
    if pb.match is not None:
        out += [f"{src.where(['match', 'areas', i])}: match.areas[{i}]: unknown area {code!r}"
                for i, code in enumerate(pb.match.areas) if code not in city.areas]
        out += [f"{src.where(['match', 'kinds', i])}: match.kinds[{i}]: unknown kind {kind!r} "
                "(config/kinds.yaml)"
                for i, kind in enumerate(pb.match.kinds) if kind not in city.kinds]
    if pb.approval is not None:
        out += _chain_problems(src, pb, city)
    for language in pb.languages:
        for channel in pb.channels:
            if language not in pb.templates or getattr(pb.templates[language], channel) is None:
                out.append(f"{src.where(['templates', language])}: templates.{language}.{channel}: "
                           f"is missing (the playbook sends {channel} in {language})")
    return out or _render_problems(src, pb, city)


def _chain_problems(src: YamlSource, pb: Playbook, city: City) -> list[str]:
    assert pb.approval is not None
    out = []
    if pb.approval.department not in city.departments:
        out.append(f"{src.where(['approval', 'department'])}: approval.department: unknown "
                   f"department {pb.approval.department!r}")
    out += _grant_problems(src, pb, city)
    for i, level in enumerate(pb.approval.chain):
        loc: list[int | str] = ["approval", "chain", i]
        dep_id = level.department or pb.approval.department
        dep = city.departments.get(dep_id)
        if dep is None:
            out.append(f"{src.where([*loc, 'department'])}: approval.chain[{i}].department: "
                       f"unknown department {dep_id!r}")
            continue
        for person in level.people:
            if person not in {p.id for p in dep.approvers}:
                out.append(f"{src.where([*loc, 'people'])}: approval.chain[{i}].people: "
                           f"{person!r} is not an approver of {dep_id!r}")
        if not level.people and not dep.at_level(level.level):
            out.append(f"{src.where([*loc, 'level'])}: approval.chain[{i}].level: {dep_id!r} has "
                       f"no approver at level {level.level}")
    return out


def _grant_problems(src: YamlSource, pb: Playbook, city: City) -> list[str]:
    """`publish_for` names scopes that exist in config/."""
    assert pb.approval is not None
    known: dict[str, Collection[str]] = {"department": city.departments, "area": city.areas,
                                         "person": city.people}
    return [f"{src.where(['approval', 'publish_for', i])}: approval.publish_for[{i}]: "
            f"unknown {kind} {value!r}"
            for i, (kind, _, value) in enumerate(g.partition(":") for g in pb.approval.publish_for)
            if value not in known[kind]]


def _render_problems(src: YamlSource, pb: Playbook, city: City) -> list[str]:
    """Render every template against a worst-case sample incident: a drill, whose texts
    start with their mark (`[DIỄN TẬP] `), so that a drill's SMS fits the budget too; each
    language in the area whose name is longest in it."""
    kind = pb.match.kinds[0] if pb.match else "report"
    texts = []
    for language in pb.languages:
        area = max(city.areas.values(), key=lambda a: len(a.name_in(language)), default=None)
        facts = IncidentFacts(id="INC-99999", kind=kind, severity=Severity.extreme,
                              title=_SAMPLE_TITLE, details="Chi tiết.", claim=_SAMPLE_TITLE,
                              fact=_SAMPLE_TITLE, fact_source="Sở Y tế Hà Nội",
                              area=area.code if area else "hn", report_count=12,
                              link="https://loa.hanoi.example/s/STM-99999-1", exercise=True)
        try:
            texts += [t for t in render_draft(pb, facts, city, datetime(2026, 11, 22, 14, 5,
                                                                         tzinfo=UTC),
                                              "Asia/Ho_Chi_Minh") if t.language == language]
        except TemplateRenderError as exc:
            return [f"{src.where(list(exc.loc))}: {exc}"]
    return [
        f"{src.where(['templates', t.language, 'sms'])}: templates.{t.language}.sms: worst case "
        f"(a drill's, with its mark) takes {t.segments} segments, over the budget of "
        f"{t.segment_budget}"
        for t in texts
        if t.segments is not None and t.segment_budget is not None and t.segments > t.segment_budget
    ]


def language_notes(playbook: Playbook, city: City) -> list[str]:
    """What a playbook's languages leave to fallbacks: each declared language it has no
    templates in (and what its readers get instead), each language it has that the city
    does not declare. Notes, not problems: a playbook may cover only some languages."""
    languages = city.languages
    notes = []
    for tag in languages.tags:
        if tag not in playbook.languages:
            instead = languages.best(tag, playbook.languages)
            notes.append(f"{playbook.id}: no {tag} ({languages.declared[tag].name}) templates: "
                         f"its readers get {instead or 'nothing'}")
    notes += [f"{playbook.id}: {tag} is not a language of config/languages.yaml: nobody "
              "reads it" for tag in playbook.languages if not languages.known(tag)]
    return notes


def load_playbooks(directory: Path, city: City) -> dict[str, Playbook]:
    """Every playbook in a folder; raises PlaybookError listing every problem found."""
    playbooks: dict[str, Playbook] = {}
    problems: list[str] = []
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise PlaybookError([f"{directory}: no playbooks (*.yaml) found"])
    for path in files:
        playbook, found = check_playbook_file(path, city)
        problems += found
        if playbook is not None:
            playbooks[playbook.id] = playbook
    if not problems and not any(p.fallback for p in playbooks.values()):
        problems.append(f"{directory}: no fallback playbook (`fallback: true`)")
    if problems:
        raise PlaybookError(problems)
    return playbooks
