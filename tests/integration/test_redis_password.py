"""Loa against a Redis that requires a password (`requirepass`): the real worker and web
work with the password in LOA_REDIS_URL, and `loa doctor` says plainly when it is wrong."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.factories import file_report, flood_body
from tests.integration.stack import Stack, running

pytestmark = pytest.mark.integration

PASSWORD = "pw-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running Loa whose redis-server was started with `requirepass`."""
    with running(tmp_path_factory.mktemp("locked"), redis_password=PASSWORD) as stack:
        yield stack


def test_the_redis_server_really_requires_the_password(locked: Stack) -> None:
    """Without the password the server refuses; the stack's URL carries it."""
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=locked.redis_service.port).ping()
    assert f":{PASSWORD}@" in locked.redis_service.url
    assert locked.redis.ping()


def test_a_report_becomes_an_incident_with_a_password_protected_redis(locked: Stack) -> None:
    """The web takes a report and the worker opens an incident, both through the password."""
    incident_id = file_report(locked, flood_body("hn-ba-dinh-kim-ma"))
    assert locked.timeline_actions(incident_id) == [
        "incident.opened", "playbook.selected", "draft.rendered", "approval.requested"]


def _doctor(stack: Stack, redis_url: str, root: Path) -> subprocess.CompletedProcess[str]:
    """`loa doctor` against `redis_url`, its output with the console's line wraps undone."""
    env = {**stack.env, "LOA_REDIS_URL": redis_url, "LOA_DATA_DIR": str(root)}
    done = subprocess.run([sys.executable, "-m", "coordinator.cli", "doctor"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    done.stdout = " ".join(done.stdout.split())
    return done


def test_doctor_says_plainly_that_the_password_is_wrong(locked: Stack, tmp_path: Path) -> None:
    """A wrong password: doctor fails, says the password was refused, and never prints it."""
    port = locked.redis_service.port
    done = _doctor(locked, f"redis://:not-the-password@127.0.0.1:{port}/0", tmp_path)
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert (f"✘ Redis at redis://:***@127.0.0.1:{port}/0 refused to let us in" in done.stdout)
    assert "the password in LOA_REDIS_URL is wrong or missing" in done.stdout
    assert "not-the-password" not in done.stdout + done.stderr
    missing = _doctor(locked, f"redis://127.0.0.1:{port}/0", tmp_path)
    assert "the password in LOA_REDIS_URL is wrong or missing" in missing.stdout


def test_doctor_hides_the_right_password_too(locked: Stack, tmp_path: Path) -> None:
    """With the right password doctor reaches Redis and shows the URL without it."""
    done = _doctor(locked, locked.redis_service.url, tmp_path)
    port = locked.redis_service.port
    assert (f"✔ Redis at redis://:***@127.0.0.1:{port}/0 answers; 1 worker(s) alive; "
            "no `loa scheduler`") in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
