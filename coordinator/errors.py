"""The errors Loa raises on purpose.

    LoaError
    ├── ConfigError              config/ is unreadable or inconsistent
    ├── PlaybookError            a playbook file does not validate (file, line, field)
    ├── TemplateRenderError      a draft template failed to render
    ├── BadEvent                 a message on a topic is not a valid event (-> dead-letters)
    └── BrokerUnavailable        the report could not be put on the broker
"""

from __future__ import annotations


class LoaError(Exception):
    """Root of every error Loa raises on purpose."""


class ConfigError(LoaError):
    """config/ cannot be loaded or is inconsistent."""


class PlaybookError(LoaError):
    """A playbook does not validate; ``problems`` holds one `file:line: field: why` each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class TemplateRenderError(LoaError):
    """A template of a playbook failed to render; ``loc`` is its place in the playbook."""

    def __init__(self, message: str, loc: tuple[str, ...] = ()) -> None:
        self.loc = loc
        super().__init__(message)


class BadEvent(LoaError):
    """A message on a topic could not be decoded into its event model."""


class BrokerUnavailable(LoaError):
    """The broker did not acknowledge a message in time."""
