"""Fixtures that start real servers: Tansu, redis-server, `loa worker`, `loa web`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from coordinator.city import load_city
from coordinator.embedded import Service, start_redis
from coordinator.keys import Keys
from coordinator.playbooks.loader import load_playbooks
from coordinator.runtime import Runtime
from coordinator.settings import Settings
from coordinator.state import Script, connect
from tests.conftest import FIXTURE_MAP
from tests.integration.browser import CHROMIUM, Chromium
from tests.integration.smtp_server import Inbox, smtp_server
from tests.integration.stack import Stack, running


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running Loa for the tests that only add to it (each uses its own areas)."""
    with running(tmp_path_factory.mktemp("stack")) as started:
        yield started


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A private redis-server (nothing on disk) for the tests of one module, which write
    under their own key prefixes. A new server knows none of the scripts this process loaded
    into the last one: they are loaded again (else a transaction queuing one would take the
    path of a Redis that lost them, depending on which module ran before)."""
    service = start_redis(tmp_path_factory.mktemp("redis"), appendonly=False)
    Script.forget_loaded()
    yield service
    service.stop()


@pytest.fixture
async def rt(redis_server: Service) -> AsyncIterator[Runtime]:
    """The worker's runtime on the module's private redis-server, under a key prefix of its
    own, with the demo city and playbooks: for one transition at a time, without a broker."""
    settings = Settings(_env_file=None, redis_url=redis_server.url)  # type: ignore[call-arg]
    city = load_city(settings.config_dir, FIXTURE_MAP)
    runtime = Runtime(settings=settings, redis=connect(redis_server.url),
                      keys=Keys(f"t{uuid.uuid4().hex[:8]}"), city=city,
                      playbooks=load_playbooks(settings.playbooks_dir, city))
    yield runtime
    await runtime.redis.aclose()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """A private stack for tests that stop and restart its parts (extra LOA_* env allowed)."""
    made: list[Stack] = []

    def make(**env: Any) -> Stack:
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


@pytest.fixture(scope="module")
def subscribe_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                    mail: tuple[int, Inbox]) -> Iterator[Stack]:
    """A running Loa that can take subscriptions, one per test module: a link secret, SMS
    to the sandbox and email to `mail` (the session stack has no link secret, so its
    subscribe form is off)."""
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with running(folder, sms=True, LOA_SMTP_HOST="127.0.0.1", LOA_SMTP_PORT=str(mail[0]),
                 LOA_LINK_SECRET="test-link-secret") as stack:
        yield stack


@pytest.fixture(scope="session")
def browser() -> Iterator[Chromium]:
    """The system Chromium under Playwright (sync API), started once; drive it with
    `with browser.awake() as b:` or, simpler, take the `page` fixture."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need the system Chromium; "
                    "run `make system-deps`", pytrace=False)
    chromium = Chromium()
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser: Chromium) -> Iterator[Page]:
    """A page in a fresh browser context (viewport 1280x900), closed after the test.
    The test must not run an event loop of its own (no `asyncio.run`) while it holds it."""
    with browser.page() as opened:
        yield opened
