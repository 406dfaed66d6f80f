"""The secrets `loa up` makes for itself, kept in its data folder so that a restart breaks no
link, reply code or session.

The file (`secrets.json`, mode 0600 from the moment it exists) holds `LOA_*` variables by
name. A variable set in the environment wins and is never written to the file. Rotation
moves the current link and session secrets to the previous ones (which still verify for
LOA_KEY_ROTATION_GRACE_S) and makes new ones; LOA_SECRET_KEY does not rotate, because API
token hashes and reply codes are keyed with it.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from coordinator.errors import ConfigError

MADE = ("LOA_LINK_SECRET", "LOA_SESSION_SECRET", "LOA_SECRET_KEY")
ROTATING = {"LOA_LINK_SECRET": "LOA_LINK_SECRETS_PREVIOUS",
            "LOA_SESSION_SECRET": "LOA_SESSION_SECRETS_PREVIOUS"}
ROTATED_AT = "LOA_KEYS_ROTATED_AT"
KEPT = (*MADE, *ROTATING.values(), ROTATED_AT)


def new_secret() -> str:
    """32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: created 0600 (never readable by others, not
    even for a moment), then moved into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_kept(path: Path) -> dict[str, str]:
    """The kept variables (empty when there is no file); raises ConfigError for a damaged
    file or one that others may read."""
    try:
        mode = path.stat().st_mode
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} may be read by others (mode {stat.S_IMODE(mode):o}); "
                          f"`chmod 600 {path}`, and rotate the secrets if others did read it")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path} should map LOA_* names to strings")
    return {k: v for k, v in data.items() if k in KEPT}


def kept_secrets(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The secrets to hand to the processes `loa up` starts: each of MADE that the
    environment does not set, made once and kept in `path`, plus the previous ones kept
    with them. Raises ConfigError (see :func:`read_kept`) and OSError."""
    kept = read_kept(path)
    made = {name: new_secret() for name in MADE if not environ.get(name) and name not in kept}
    if made:
        kept |= made
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, json.dumps(kept, indent=2))
    # A previous secret only belongs with the current one it was replaced by.
    handed = {name: kept[name] for name in MADE if not environ.get(name)}
    for current, previous in ROTATING.items():
        if current in handed and kept.get(previous) and not environ.get(previous):
            handed[previous] = kept[previous]
            if kept.get(ROTATED_AT) and not environ.get(ROTATED_AT):
                handed[ROTATED_AT] = kept[ROTATED_AT]
    return handed


def rotate_kept_secrets(path: Path, now: datetime) -> dict[str, str]:
    """New link and session secrets in `path`; the current ones become the previous ones
    (older previous ones are dropped) from `now`. Returns what the file now holds. Raises
    ConfigError and OSError."""
    kept = read_kept(path)
    for current, previous in ROTATING.items():
        if kept.get(current):
            kept[previous] = kept[current]
        kept[current] = new_secret()
    kept[ROTATED_AT] = now.isoformat()
    kept.setdefault("LOA_SECRET_KEY", new_secret())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(kept, indent=2))
    return kept
