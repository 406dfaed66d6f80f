"""Fixtures that start real servers: Tansu, redis-server, `loa worker`, `loa web`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.smtp_server import Inbox, smtp_server
from tests.integration.stack import Stack, running


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running Loa for the tests that only add to it (each uses its own areas)."""
    with running(tmp_path_factory.mktemp("stack")) as started:
        yield started


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """A private stack for tests that stop and restart its parts (extra LOA_* env allowed)."""
    made: list[Stack] = []

    def make(**env: str) -> Stack:
        made.append(Stack(tmp_path / f"stack{len(made)}", **env))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture(scope="module")
def mail() -> Iterator[tuple[int, Inbox]]:
    """A real SMTP server (aiosmtpd) that keeps what it receives: (port, inbox)."""
    with smtp_server() as server:
        yield server
