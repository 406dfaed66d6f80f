"""Moving the data from one area map to the next (`loa areas migrate`).

By a mapping file (coordinator.area_mapping):
- a subscriber follows every new area that took part of an old one they chose (someone of a
  split ward hears of each piece of it rather than of none);
- an open incident, and a reporter credential's area scope, take the one new area their old
  one became; when it was split, the operator chooses (`choose`), since neither an incident
  nor a scope may silently grow;
- a playbook's `match.areas` and `publish_for: area:` entries list every new area;
- closed incidents and published statements keep the codes they had (the record; the
  public page names them from the earlier map).

Nothing that cannot be mapped is changed; the report says what and why. Nothing at all
moves until every open incident and credential has found its area; then everything that
can moves and the new map is recorded. Running it again moves what a corrected mapping file
now maps. The move is audited, and each moved incident's timeline says so.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.area_mapping import AreaMapping
from coordinator.area_maps import read_yaml
from coordinator.events import AuditEvent, Interface
from coordinator.keys import Keys
from coordinator.migrations.area_map import record_area_map
from coordinator.migrations.version import literal_pattern
from coordinator.model.incident import Incident, IncidentStatus
from coordinator.state import Redis, queue_audit
from coordinator.subscribers import store
from coordinator.subscribers.models import Subscriber
from coordinator.subscribers.optin import OptinRequest
from coordinator.subscribers.registry import save_subscriber
from coordinator.tokens import TokenRecord


@dataclass
class MoveReport:
    """What a move did (or, in a dry run, would do)."""

    subscribers: Counter[tuple[str, tuple[str, ...]]] = field(default_factory=Counter)
    subscribers_unmapped: Counter[str] = field(default_factory=Counter)
    incidents: list[tuple[str, str, str]] = field(default_factory=list)
    incidents_unmapped: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    credentials: list[tuple[str, str, str]] = field(default_factory=list)
    credentials_unmapped: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    playbooks: list[tuple[str, int, str, tuple[str, ...]]] = field(default_factory=list)
    playbooks_unmapped: list[tuple[str, int, str]] = field(default_factory=list)
    requests: int = 0  # web subscriptions waiting for confirmation, moved
    notes: list[str] = field(default_factory=list)  # what moved and needs a look
    asked: bool = False  # to move (else a dry run)
    recorded: bool = False  # moved, and the data recorded as on the new map

    @property
    def blocked(self) -> bool:
        """An open incident or a credential has no single new area: the map stays."""
        return bool(self.incidents_unmapped or self.credentials_unmapped)

    def lines(self, source: str, target: str) -> list[str]:
        """What `loa areas migrate` prints. Pure."""
        verb = "moved" if self.recorded else "would move"
        lines = [f"subscribers: {n} of {old} {verb} to {', '.join(new)}"
                 for (old, new), n in sorted(self.subscribers.items())]
        lines += [f"subscribers NOT moved: {n} of {old} ({target} has no area for it: add it to "
                  f"the mapping file)" for old, n in sorted(self.subscribers_unmapped.items())]
        lines += [f"incident {i}: {old} -> {new}" for i, old, new in self.incidents]
        lines += [f"incident {i} NOT moved: {old} " + _why(old, options)
                  for i, old, options in self.incidents_unmapped]
        lines += [f"credential {n}: {old} -> {new}" for n, old, new in self.credentials]
        lines += [f"credential {n} NOT moved: {old} " + _why(old, options)
                  for n, old, options in self.credentials_unmapped]
        lines += [f"playbook {f}:{line}: {old} -> {', '.join(new)}"
                  for f, line, old, new in self.playbooks]
        lines += [f"playbook {f}:{line}: {old} NOT changed ({target} has no area for it)"
                  for f, line, old in self.playbooks_unmapped]
        if self.requests:
            lines.append(f"subscriptions waiting for confirmation: {self.requests} {verb}")
        lines += self.notes
        if not lines:
            lines.append(f"nothing names an area that {target} changes")
        if self.recorded:
            lines.append(f"done: the data is on {target}; name it in config/areas.yaml "
                         f"(map: {target}) and start Loa again")
        elif self.asked:
            lines.append(f"nothing moved: the data stays on {source} until every open "
                         "incident and credential has one area (--choose OLD=NEW)")
        else:
            lines.append("dry run: nothing changed; --apply moves it")
        return lines


def single(mapping: AreaMapping, code: str, choose: dict[str, str]) -> tuple[str | None,
                                                                           tuple[str, ...]]:
    """The one new area an incident or a scope in `code` takes (the operator's choice
    for a split area), with the candidates. Pure."""
    targets = mapping.targets(code)
    if code in choose and choose[code] in targets:
        return choose[code], targets
    return (targets[0] if len(targets) == 1 else None), targets


@dataclass(frozen=True)
class Mover:
    """Who moves the data (the audit trail's actor) and through what."""

    actor: str
    interface: Interface

    def event(self, action: str, subject: str, detail: dict[str, object],
              incident_id: str | None = None) -> AuditEvent:
        """The audit event of one move."""
        return AuditEvent(actor=self.actor, action=action, interface=self.interface,
                          incident_id=incident_id, subject=subject, detail=detail)


async def move_areas(redis: Redis, keys: Keys, mapping: AreaMapping, playbooks_dir: Path,
                     choose: dict[str, str], mover: Mover | None) -> MoveReport:
    """Move subscribers, open incidents, credentials and playbooks from `mapping.source`
    to `mapping.target`, audited as `mover`'s; without a mover, only report what would
    move (a dry run)."""
    report = MoveReport(asked=mover is not None)
    rewritten = _playbooks(playbooks_dir, mapping, report)  # read (and refused) before
    moving = mover
    if mover is not None:  # an incident or a credential without one area: nothing moves
        probe = MoveReport()
        await _incidents(redis, keys, mapping, choose, probe, None)
        await _credentials(redis, keys, mapping, choose, probe, False)
        moving = mover if not probe.blocked else None
    await _subscribers(redis, keys, mapping, report, moving is not None)
    await _requests(redis, keys, mapping, report, moving is not None)
    await _incidents(redis, keys, mapping, choose, report, moving)
    await _credentials(redis, keys, mapping, choose, report, moving is not None)
    if moving is not None:
        for path, text in rewritten.items():
            path.write_text(text, encoding="utf-8")
        await record_area_map(redis, keys, mapping.target)
        report.recorded = True
        async with redis.pipeline(transaction=True) as pipe:
            queue_audit(pipe, keys, moving.event("areas.migrated", mapping.target, {
                "from": mapping.source, "lines": report.lines(mapping.source,
                                                              mapping.target)}))
            await pipe.execute()
    return report


async def _subscribers(redis: Redis, keys: Keys, mapping: AreaMapping, report: MoveReport,
                       apply: bool) -> None:
    prefix = keys.subs_bits("area", "")
    codes = sorted({k.removeprefix(prefix) async for k in
                    redis.scan_iter(match=literal_pattern(prefix) + "*", count=1000)})
    for code in codes:
        targets = mapping.targets(code)
        if targets == (code,):
            continue
        numbers = await store.members(redis, keys.subs_bits("area", code))
        for start in range(0, len(numbers), 500):
            for sub in (await store.load(redis, keys, numbers[start:start + 500])).values():
                if not targets:
                    report.subscribers_unmapped[code] += 1
                    continue
                report.subscribers[(code, targets)] += 1
                if apply:
                    await save_subscriber(redis, keys, _moved(sub, mapping))


def _moved(sub: Subscriber, mapping: AreaMapping) -> Subscriber:
    """The subscriber with its areas on the new map. Pure."""
    areas = [t for a in sub.areas for t in (mapping.targets(a) or (a,))]
    return sub.model_copy(update={"areas": list(dict.fromkeys(areas))})


async def _requests(redis: Redis, keys: Keys, mapping: AreaMapping, report: MoveReport,
                    apply: bool) -> None:
    """Web subscriptions waiting for confirmation name the areas asked for: confirmed after
    the move, they must not bring the old codes back."""
    prefix = keys.optin_request("")
    async for key in redis.scan_iter(match=literal_pattern(prefix) + "*", count=1000):
        raw = await redis.get(key)
        if raw is None:
            continue
        request = OptinRequest.model_validate_json(raw)
        areas = list(dict.fromkeys(t for a in request.subscriber.areas
                                   for t in (mapping.targets(a) or (a,))))
        if areas == request.subscriber.areas:
            continue
        report.requests += 1
        if apply:
            moved = request.model_copy(update={"subscriber": request.subscriber.model_copy(
                update={"areas": areas})})
            await redis.set(key, moved.model_dump_json(), keepttl=True, xx=True)


async def _incidents(redis: Redis, keys: Keys, mapping: AreaMapping, choose: dict[str, str],
                     report: MoveReport, mover: Mover | None) -> None:
    for incident_id in await redis.zrange(keys.incidents(), 0, -1):
        row = await redis.hgetall(keys.incident(incident_id))
        if not row or row.get("status") == IncidentStatus.closed.value:
            continue
        stored = Incident.from_hash(row)
        new = _one_area(mapping, stored.area, choose, incident_id, report.incidents,
                        report.incidents_unmapped)
        if new is None:
            continue
        suffix = ":exercise" if stored.exercise else ""
        old_key = keys.open_incident(f"{stored.kind}:{stored.area}{suffix}")
        new_key = keys.open_incident(f"{stored.kind}:{new}{suffix}")
        holder = await redis.get(new_key)
        if holder not in (None, incident_id):
            report.notes.append(f"incident {incident_id}: new {stored.kind} reports in {new} "
                                f"join {holder}, open there already (merge them if they are "
                                "one: loa incident merge)")
        scopes = {f: _scope(mapping, str(row.get(f, "")), choose)
                  for f in ("source_scope", "severity_scope") if row.get(f)}
        if mover is not None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.incident(incident_id), mapping={"area": new, **scopes})
                queue_audit(pipe, keys, mover.event(
                    "incident.area_moved", incident_id, {"from": stored.area, "to": new,
                                                         "map": mapping.target}, incident_id))
                if await redis.get(old_key) == incident_id:
                    pipe.delete(old_key)
                    if holder is None:
                        pipe.set(new_key, incident_id)
                await pipe.execute()


def _one_area(mapping: AreaMapping, code: str, choose: dict[str, str], subject: str,
              moved: list[tuple[str, str, str]],
              unmapped: list[tuple[str, str, tuple[str, ...]]]) -> str | None:
    """The one new area an incident's or a credential's `code` becomes, noted in `moved`;
    None when it stays as it is, or has no one new area (noted in `unmapped`)."""
    new, targets = single(mapping, code, choose)
    if new is None:
        unmapped.append((subject, code, targets))
    elif new != code:
        moved.append((subject, code, new))
        return new
    return None


def _scope(mapping: AreaMapping, scope: str, choose: dict[str, str]) -> str:
    """An incident's recorded scope (`area:CODE`, who opened it or raised its severity) on
    the new map: the one area its area became, else as it was. Pure."""
    kind, _, code = scope.partition(":")
    new = single(mapping, code, choose)[0] if kind == "area" else None
    return f"area:{new}" if new else scope


async def _credentials(redis: Redis, keys: Keys, mapping: AreaMapping, choose: dict[str, str],
                       report: MoveReport, apply: bool) -> None:
    for name, digest in sorted((await redis.hgetall(keys.token_names())).items()):
        raw = await redis.get(keys.token(digest))
        record = TokenRecord.model_validate_json(raw) if raw else None
        if record is None or not record.area:
            continue
        new = _one_area(mapping, record.area, choose, name, report.credentials,
                        report.credentials_unmapped)
        if new is not None and apply:
            await redis.set(keys.token(digest),
                            record.model_copy(update={"area": new}).model_dump_json())


def _playbooks(playbooks_dir: Path, mapping: AreaMapping, report: MoveReport
               ) -> dict[Path, str]:
    """Each playbook's text with the area codes of its `match.areas` and `publish_for`
    rewritten (comments and layout kept), for those it changes. Raises ConfigError naming
    a file that cannot be read, before anything is moved."""
    rewritten: dict[Path, str] = {}
    for path in sorted(playbooks_dir.glob("*.yaml")):
        source = read_yaml(path)
        lines = source.text.splitlines(keepends=True)
        for loc, code, template in _area_references(source.data):
            targets = mapping.targets(code)
            if targets == (code,):
                continue
            line = source.line_of(loc)
            if not targets:
                report.playbooks_unmapped.append((path.name, line, code))
                continue
            report.playbooks.append((path.name, line, code, targets))
            lines[line - 1] = _rewritten(lines[line - 1], template.format(code),
                                         [template.format(t) for t in targets])
        if "".join(lines) != source.text:
            rewritten[path] = "".join(lines)
    return rewritten


def _rewritten(line: str, old: str, new: list[str]) -> str:
    """A line naming `old` naming `new` instead: an item of a block list becomes one item
    per new entry; in a flow list (`[a, b]`) the entries are listed in its place. Pure."""
    item = line.lstrip()
    value, hash_, comment = item[2:].partition(" #")
    if item.startswith("- ") and value.strip().strip("'\"") == old:
        indent = line[:len(line) - len(item)]
        note = f"  #{comment.rstrip()}" if hash_ else ""
        return "".join(f"{indent}- {entry}{note if i == 0 else ''}\n"
                       for i, entry in enumerate(new))
    found = re.search(rf"(?<![\w:-])(['\"]?){re.escape(old)}\1(?![\w-])", line)
    if found is None:
        return line
    quote = found.group(1)
    listed = ", ".join(f"{quote}{entry}{quote}" for entry in new)
    return line[:found.start()] + listed + line[found.end():]


def _area_references(data: object) -> list[tuple[list[int | str], str, str]]:
    """(where, area code, how it is written) of each area a playbook names."""
    if not isinstance(data, dict):
        return []
    found: list[tuple[list[int | str], str, str]] = []
    match = data.get("match") or {}
    for i, code in enumerate(match.get("areas") or [] if isinstance(match, dict) else []):
        found.append((["match", "areas", i], str(code), "{}"))
    approval = data.get("approval") or {}
    grants = approval.get("publish_for") or [] if isinstance(approval, dict) else []
    for i, grant in enumerate(grants):
        if str(grant).startswith("area:"):
            found.append((["approval", "publish_for", i], str(grant)[5:], "area:{}"))
    return found


def _why(old: str, options: tuple[str, ...]) -> str:
    """Why an incident or a scope could not be moved, and what to do."""
    if not options:
        return "(no area of the new map took it: add it to the mapping file)"
    return (f"(split into {', '.join(options)}: choose one with "
            f"--choose {old}={options[0]})")
