"""Shared factories for unit and integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator.city import City, load_city
from coordinator.events import Report, Severity
from coordinator.playbooks.loader import load_playbooks
from coordinator.playbooks.models import Playbook
from coordinator.settings import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "config"
PLAYBOOKS_DIR = REPO_ROOT / "playbooks"


@pytest.fixture(scope="session")
def city() -> City:
    """The demo city from config/."""
    return load_city(CONFIG_DIR)


@pytest.fixture(scope="session")
def playbooks(city: City) -> dict[str, Playbook]:
    """The shipped playbooks."""
    return load_playbooks(PLAYBOOKS_DIR, city)


@pytest.fixture
def make_report() -> Callable[..., Report]:
    """Build a valid report; override any field."""

    def make(**overrides: Any) -> Report:
        fields: dict[str, Any] = {
            "id": f"rep-{uuid.uuid4().hex[:12]}", "kind": "flood", "severity": Severity.severe,
            "area": "hn-ba-dinh-dien-bien", "title": "Ngập sâu phố Điện Biên Phủ",
            "details": "Nước ngập 40 cm", "reporter": "UBND phường",
        }
        return Report(**(fields | overrides))

    return make


@pytest.fixture
def playbook_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a playbook YAML text to a file named `<name>.yaml`."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
