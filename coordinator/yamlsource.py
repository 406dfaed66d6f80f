"""YAML files with line numbers, so that a validation error names file, line and field."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Loc = Sequence[int | str]
M = TypeVar("M", bound=BaseModel)


class YamlSource:
    """A parsed YAML document and its node tree (for line numbers)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.node = yaml.compose(text, Loader=yaml.SafeLoader)
        self.data: Any = yaml.safe_load(text)

    @classmethod
    def read(cls, path: Path) -> YamlSource:
        """Read and parse a file; raises ``yaml.YAMLError`` or ``OSError``."""
        return cls(path, path.read_text(encoding="utf-8"))

    def line_of(self, loc: Loc) -> int:
        """1-based line of the deepest key (or list item) that `loc` reaches."""
        node = self.node
        line = node.start_mark.line + 1 if node is not None else 1
        for part in loc:
            found = _child(node, part)
            if found is None:
                break
            marker, node = found
            line = marker.start_mark.line + 1
        return line

    def where(self, loc: Loc) -> str:
        """`path:line` for a field."""
        return f"{self.path}:{self.line_of(loc)}"


def _child(node: yaml.Node | None, part: int | str) -> tuple[yaml.Node, yaml.Node] | None:
    """(the node whose line names `part`, the value under it)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item: yaml.Node = node.value[part]
        return item, item
    return None


def dotted(loc: Loc) -> str:
    """`approval.chain[1].within` from ('approval', 'chain', 1, 'within')."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def describe_errors(source: YamlSource, exc: ValidationError) -> list[str]:
    """One `file:line: field: message` line for each pydantic error."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "is required"
        problems.append(f"{source.where(loc)}: {dotted(loc)}: {message}")
    return problems


def validate_source(source: YamlSource, model: type[M]) -> M | list[str]:
    """The model, or the list of problems naming file, line and field."""
    try:
        return model.model_validate(source.data)
    except ValidationError as exc:
        return describe_errors(source, exc)


def parse_problem(path: Path, exc: yaml.YAMLError) -> str:
    """A YAML syntax error as `file:line: message`."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{path}:{line}: not valid YAML: {problem}"
