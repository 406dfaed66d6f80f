"""A mapping file between two area maps (config/maps/OLD-to-NEW.csv), read and checked.

One row per (old area, new area that took all or part of it): ``from,to,share`` with `share`
``whole`` or ``part``, and an optional ``note``; lines starting with ``#`` are comments. An
old area the file does not name keeps its code when the new map has it (a city, a former
district kept as a grouping); otherwise it cannot be mapped, and whoever moves data says so.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from coordinator.area_maps import AreaMap
from coordinator.errors import ConfigError

COLUMNS = ("from", "to", "share")


@dataclass(frozen=True)
class AreaMapping:
    """Old area code -> the new areas that took it, in the file's order."""

    source: str
    target: str
    moves: dict[str, tuple[str, ...]]
    new_areas: frozenset[str]

    def targets(self, code: str) -> tuple[str, ...]:
        """The new codes for an old one: the file's, else the same code when the new map
        has it, else () (it cannot be mapped). Pure."""
        if code in self.moves:
            return self.moves[code]
        return (code,) if code in self.new_areas else ()


def mapping_path(config_dir: Path, source: str, target: str) -> Path:
    """Where the mapping from `source` to `target` is kept."""
    return config_dir / "maps" / f"{source}-to-{target}.csv"


def read_mapping(path: Path, old: AreaMap, new: AreaMap) -> AreaMapping:
    """Read and check a mapping file; raises ConfigError naming each bad line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_mapping(str(path), text, old, new)


def parse_mapping(where: str, text: str, old: AreaMap, new: AreaMap) -> AreaMapping:
    """`read_mapping` on text already read. Pure."""
    numbered = [(n, line) for n, line in enumerate(text.removeprefix("\ufeff").splitlines(),
                                                  start=1)
                if line.strip() and not line.lstrip().startswith("#")]
    if numbered:  # the header's names, without spaces around them
        numbered[0] = (numbered[0][0], ",".join(c.strip() for c in numbered[0][1].split(",")))
    rows = list(csv.DictReader(io.StringIO("\n".join(line for _, line in numbered))))
    header = numbered[0][1] if numbered else ""
    missing = [c for c in COLUMNS if c not in next(csv.reader([header]), [])]
    if missing:
        line = numbered[0][0] if numbered else 1
        raise ConfigError(f"{where}:{line}: the header lacks {', '.join(missing)} "
                          f"(columns: {', '.join(COLUMNS)}[, note])")
    problems: list[str] = []
    moves: dict[str, list[str]] = {}
    for (line, _), row in zip(numbered[1:], rows, strict=True):
        source, target = (row.get("from") or "").strip(), (row.get("to") or "").strip()
        share = (row.get("share") or "").strip()
        if source not in old.areas:
            problems.append(f"{where}:{line}: from: {source!r} is not an area of {old.name}")
        if target not in new.areas:
            problems.append(f"{where}:{line}: to: {target!r} is not an area of {new.name}")
        if share not in ("whole", "part"):
            problems.append(f"{where}:{line}: share: {share!r} is not whole or part")
        moves.setdefault(source, [])
        if target not in moves[source]:
            moves[source].append(target)
    if problems:
        raise ConfigError("\n".join(problems))
    return AreaMapping(old.name, new.name, {k: tuple(v) for k, v in moves.items()},
                       frozenset(new.areas))
