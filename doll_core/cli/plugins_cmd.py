"""``doll plugins ...``: what plugins are installed, and what failed to load."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from doll_core.interfaces import PluginKind
from doll_core.registry import Registry, get_registry

plugins_app = typer.Typer(
    help="Inspect the installed plugins.", no_args_is_help=True, add_completion=False
)


def report_failures(registry: Registry) -> None:
    """Print each plugin load problem as a warning line on stderr."""
    for failure in registry.failures:
        typer.echo(f"warning: {failure}", err=True)


@plugins_app.command("list")
def list_plugins(
    kind: PluginKind | None = typer.Option(None, "--kind", help="Show only this kind."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List every plugin: name, kind, distribution and a one-line description."""
    registry = get_registry()
    plugins = registry.plugins(kind)
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in plugins], indent=2))
    else:
        table = Table(title="DoLL plugins", title_justify="left")
        for column in ("name", "kind", "distribution", "description"):
            table.add_column(column, overflow="fold")
        for plugin in plugins:
            # Text, not markup: third-party names and descriptions may hold '[...]'.
            cells = (plugin.name, plugin.kind.value, plugin.distribution, plugin.description)
            table.add_row(*(Text(cell) for cell in cells))
        Console().print(table)
    report_failures(registry)
