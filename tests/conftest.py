"""Shared factories for unit and integration tests."""

from __future__ import annotations

import os
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
# The suite's fixtures name areas of the 2019 map (hn-ba-dinh-kim-ma, ...), a map Loa keeps
# for the data of cities that have not moved yet; test_area_maps.py (unit and integration)
# covers the map in force, hanoi-2025, and the move between them. The workers and web
# servers the tests start inherit the setting.
FIXTURE_MAP = "hanoi-2019"
os.environ["LOA_AREA_MAP"] = FIXTURE_MAP


@pytest.fixture(scope="session")
def city() -> City:
    """The demo city from config/."""
    return load_city(CONFIG_DIR, FIXTURE_MAP)


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
