"""`loa secrets rotate`: new link and session secrets for `loa up`, the old ones still
verifying for LOA_KEY_ROTATION_GRACE_S."""

from __future__ import annotations

import typer

from coordinator.cli.common import fail, out
from coordinator.errors import ConfigError
from coordinator.events import utcnow
from coordinator.settings import load_settings

secrets_app = typer.Typer(help="The secrets `loa up` keeps in its data folder.",
                          no_args_is_help=True)


@secrets_app.command("rotate")
def rotate() -> None:
    """Make new link and session secrets in the data folder's secrets.json; links and
    sessions signed with the old ones keep working for the grace period. Restart `loa up`
    to use them. (Secrets set in the environment are yours to rotate: see
    config/loa.example.env.)"""
    from coordinator.kept_secrets import rotate_kept_secrets

    settings = load_settings()
    now = utcnow()
    try:
        rotate_kept_secrets(settings.secrets_file, now)
    except (ConfigError, OSError) as exc:
        raise fail(str(exc)) from exc
    days = settings.key_rotation_grace_s / 86400
    out.print(f"rotated in {settings.secrets_file}: new link and session secrets; the old ones "
              f"still verify for {days:g} day(s) from {now.isoformat(timespec='seconds')}. "
              "Restart `loa up` to use them.")
