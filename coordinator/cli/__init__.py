"""`loa`: the command line (`main` builds the Typer app from the command groups)."""

from coordinator.cli.main import app, main

__all__ = ["app", "main"]
