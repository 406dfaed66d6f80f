"""Subscribers in and out as CSV. Columns: phone, email, language, areas, topics, channels,
role, status, id, drills (`yes` to receive exercises), lists (test lists) (lists separated
by `;`; only areas and channels are required). The id
column keeps each subscriber's id through an export and an import elsewhere; empty, the
registry finds the record by phone or email, or makes a new id. Every rejected row is
reported with its line and why."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from pydantic import ValidationError

from coordinator.city import City
from coordinator.subscribers.models import Subscriber

COLUMNS = ["phone", "email", "language", "areas", "topics", "channels", "role", "status", "id",
           "drills", "lists"]


def _list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").replace(",", ";").split(";") if part.strip()]


def parse_csv(text: str, city: City, source: str = "csv"
              ) -> Iterator[tuple[int, Subscriber | None, str]]:
    """(line, subscriber or None, why rejected) for each data row. Pure."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"areas", "channels"} - set(reader.fieldnames or [])
    if missing:
        yield 1, None, f"header: missing column(s) {', '.join(sorted(missing))}"
        return
    for row in reader:
        line = reader.line_num
        fields = {
            "phone": row.get("phone") or None, "email": row.get("email") or None,
            # a declared language in any letter case (`FR`), as BCP 47 allows
            "language": city.languages.find(row.get("language") or city.languages.default)
            or (row.get("language") or "").strip(),
            "areas": _list(row.get("areas")),
            "topics": _list(row.get("topics")) or ["*"], "channels": _list(row.get("channels")),
            "role": (row.get("role") or "resident").strip(), "consent_source": source,
            "status": "opted_out" if (row.get("status") or "").strip() == "opted_out"
            else "active",
            "id": (row.get("id") or "").strip(),
            "drills": (row.get("drills") or "no").strip(),  # yes/no, true/false, 1/0
            "lists": _list(row.get("lists")),
        }
        unknown = [a for a in fields["areas"] if a not in city.areas]  # type: ignore[union-attr]
        if unknown:
            yield line, None, f"areas: unknown area {', '.join(unknown)}"
            continue
        if not city.languages.known(str(fields["language"])):
            yield line, None, (f"language: {fields['language']!r} is not one of the city's "
                               f"languages ({', '.join(city.languages.tags)})")
            continue
        try:
            yield line, Subscriber.model_validate(fields), ""
        except ValidationError as exc:
            yield line, None, "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'row'}: "
                f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())


def to_csv(subscribers: list[Subscriber]) -> str:
    """The registry as CSV, in the import format."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for s in subscribers:
        writer.writerow([s.phone or "", s.email or "", s.language, ";".join(s.areas),
                         ";".join(s.topics), ";".join(s.channels), s.role, s.status, s.id,
                         "yes" if s.drills else "no", ";".join(s.lists)])
    return out.getvalue()
