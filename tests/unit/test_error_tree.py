"""One tree of errors: every exception class defined in coordinator/ is a LoaError, and every
one defined in channels/ is under the channels' own root (coordinator/errors.py draws both)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import channels
import coordinator
from coordinator.errors import LoaError


def _modules(package: ModuleType) -> list[ModuleType]:
    """The package and every module under it, imported (not `__main__`: it runs the CLI)."""
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        if not info.name.endswith(".__main__"):
            found.append(importlib.import_module(info.name))
    return found


def _exceptions_defined_in(package: ModuleType) -> list[type[BaseException]]:
    """Every exception class whose defining module is inside `package`, by qualified name."""
    classes: dict[str, type[BaseException]] = {}
    for module in _modules(package):
        for _, value in inspect.getmembers(module, inspect.isclass):
            if (issubclass(value, BaseException)
                    and value.__module__.split(".")[0] == package.__name__):
                classes[f"{value.__module__}.{value.__qualname__}"] = value
    return [classes[name] for name in sorted(classes)]


def test_every_coordinator_error_is_a_loa_error() -> None:
    """Every exception class defined under coordinator/ subclasses LoaError."""
    found = _exceptions_defined_in(coordinator)
    assert LoaError in found and len(found) > 10  # the walk did find them
    strays = [f"{c.__module__}.{c.__qualname__}" for c in found if not issubclass(c, LoaError)]
    assert strays == []


def test_every_channels_error_is_under_the_channels_root() -> None:
    """Every exception class under channels/ subclasses ChannelError, once channels.base has it."""
    base = importlib.import_module("channels.base")
    root = getattr(base, "ChannelError", None)
    if root is None:
        pytest.skip("channels/base.py has no ChannelError root yet")
    found = _exceptions_defined_in(channels)
    assert root in found
    strays = [f"{c.__module__}.{c.__qualname__}" for c in found if not issubclass(c, root)]
    assert strays == []
