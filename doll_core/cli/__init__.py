"""The ``doll`` command line (typer + rich)."""

from doll_core.cli.app import app, main

__all__ = ["app", "main"]
