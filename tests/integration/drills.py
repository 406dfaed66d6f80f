"""Drill playbooks with deadlines in seconds, and a config/ copy with absences, for tests."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from tests.conftest import CONFIG_DIR, PLAYBOOKS_DIR

DRILL = """\
version: 1
id: {id}
title: "Drill: {id}"
match:
  kinds: [{id}]
  min_severity: {min_severity}
approval:
  department: construction
  on_exhausted: {rule}{grants}
  hold_alert_every: 2s
  chain:
{chain}
channels: [web]
languages: [vi, en]
templates:
  vi:
    web: {{title: "Diễn tập {{{{ incident.title }}}}", body: "{{{{ area.name }}}}"}}
  en:
    web: {{title: "Drill {{{{ incident.title }}}}", body: "{{{{ area.name }}}}"}}
"""

# construction level 1: nguyen-van-an, le-thi-thu-ha; level 2: pham-duc-thang;
# people-committee level 1 is the third level of the standard drill chain.
THREE_LEVELS = """\
    - {level: 1, within: 2s}
    - {level: 2, within: 2s}
    - {department: people-committee, level: 1, within: 2s}"""


def drill(playbooks: Path, pid: str, rule: str = "hold", chain: str = THREE_LEVELS,
          min_severity: str = "minor") -> None:
    """Write one drill playbook (its kind is its id)."""
    # `publish` applies only to reports of the construction department's own reporters
    grants = "\n  publish_for: [department:construction]" if rule == "publish" else ""
    (playbooks / f"{pid}.yaml").write_text(
        DRILL.format(id=pid, rule=rule, chain=chain, min_severity=min_severity, grants=grants),
        encoding="utf-8")


def drill_folders(root: Path, within_s: int = 2, absences: bool = False) -> tuple[Path, Path]:
    """(playbooks, config) folders: the fallback plus drills, and config/ (with absences:
    nguyen-van-an away with delegate pham-duc-thang, le-thi-thu-ha away without one)."""
    playbooks = root / "playbooks"
    playbooks.mkdir(parents=True)
    shutil.copy(PLAYBOOKS_DIR / "fallback.yaml", playbooks)
    chain = THREE_LEVELS.replace("2s", f"{within_s}s")
    drill(playbooks, "drill-hold", "hold", chain)
    # level 1 long enough for an approver's token and a refused `loa approve` (each a CLI
    # start, seconds on a slow machine) before the chain is used up
    drill(playbooks, "drill-duty", "duty_officer", chain.replace(f"{within_s}s", "12s", 1))
    drill(playbooks, "drill-publish", "publish", chain, min_severity="extreme")
    drill(playbooks, "drill-email", "hold", """\
    - {level: 1, within: 2s}
    - {level: 2, within: 60s}""")
    drill(playbooks, "drill-absent", "hold", """\
    - {people: [nguyen-van-an, le-thi-thu-ha], within: 30s}
    - {level: 2, within: 30s}""")
    drill(playbooks, "drill-skip", "hold", """\
    - {people: [le-thi-thu-ha], within: 30s}
    - {level: 2, within: 30s}""")
    config = root / "config"
    shutil.copytree(CONFIG_DIR, config)
    with (config / "kinds.yaml").open("a", encoding="utf-8") as kinds:  # a drill's kind is its id
        kinds.writelines(f"  - {{id: {p.stem}, name: {{vi: {p.stem}, en: {p.stem}}}}}\n"
                         for p in sorted(playbooks.glob("drill-*.yaml")))
    if not absences:
        return playbooks, config
    departments = yaml.safe_load((config / "departments.yaml").read_text(encoding="utf-8"))
    now = datetime.now(UTC)
    away = {"from": (now - timedelta(days=1)).isoformat(),
            "until": (now + timedelta(days=1)).isoformat(), "note": "công tác"}
    for dep in departments["departments"]:
        for person in dep["approvers"]:
            if person["id"] == "nguyen-van-an":
                person["absent"] = [away]
                person["delegate"] = "pham-duc-thang"
            if person["id"] == "le-thi-thu-ha":
                person["absent"] = [away]
    (config / "departments.yaml").write_text(yaml.safe_dump(departments, allow_unicode=True),
                                             encoding="utf-8")
    return playbooks, config


def drill_env(root: Path, within_s: int = 2, absences: bool = False) -> dict[str, str]:
    """LOA_* settings for a stack that runs the drills of `drill_folders` (made under `root`),
    each drill report its own incident."""
    playbooks, config = drill_folders(root, within_s, absences)
    return {"LOA_PLAYBOOKS_DIR": str(playbooks), "LOA_CONFIG_DIR": str(config),
            "LOA_CORRELATION_WINDOW_S": "0.000001"}  # every drill report its own incident


def add_drill(env: dict[str, str], pid: str, chain: str) -> None:
    """One more drill playbook (`hold` when exhausted) in the folders of `drill_env`, its
    kind declared."""
    drill(Path(env["LOA_PLAYBOOKS_DIR"]), pid, "hold", chain)
    with (Path(env["LOA_CONFIG_DIR"]) / "kinds.yaml").open("a", encoding="utf-8") as kinds:
        kinds.write(f"  - {{id: {pid}, name: {{vi: {pid}, en: {pid}}}}}\n")
