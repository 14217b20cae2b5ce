"""``doll doctor PATH``: check a run folder or label store and say what ``--resume`` redoes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

#: Exit code when doctor found problems (user errors exit 2, through the group).
PROBLEMS_EXIT_CODE = 1

_STYLE = {"ok": "green", "warning": "yellow", "problem": "bold red"}
_ACTION = {
    "continue": "continue",
    "redo": "redo",
    "run": "run (new)",
    "fails": "stops with an error",
}


def doctor_command(
    path: Path = typer.Argument(
        ...,
        help="A run folder (doll run), an ablation folder, a stages folder, one stage "
        "folder or a label store.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    show_all: bool = typer.Option(False, "--all", help="List the files found healthy too."),
) -> None:
    """Check a run folder or label store and say what `doll run --resume` would redo.

    Loads checkpoints and label shards as DoLL does; checks manifests, stages, versions.

    Replays the run's experiment.json without doing any work. Nothing is changed.

    Exit code: 0 healthy (warnings allowed), 1 problems found, 2 not a run or store.
    """
    from rich.console import Console
    from rich.table import Table

    from doll_core.doctor import diagnose
    from doll_core.experiment.stages import DONE

    report = diagnose(path)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        if not report.healthy:
            raise typer.Exit(PROBLEMS_EXIT_CODE)
        return

    console = Console(soft_wrap=False)
    shown = [f for f in report.findings if show_all or f.severity != "ok"]
    hidden = len(report.findings) - len(shown)
    if shown:
        table = Table(title=f"doll doctor: {report.path} ({report.kind})", expand=False)
        table.add_column("", no_wrap=True)
        table.add_column("file", overflow="fold")
        table.add_column("finding", overflow="fold")
        for finding in shown:
            style = _STYLE[finding.severity]
            table.add_row(f"[{style}]{finding.severity}[/]", finding.path, finding.message)
        console.print(table)
    else:
        console.print(f"doll doctor: {report.path} ({report.kind})")
    if hidden:
        console.print(f"[green]{hidden} check(s) ok[/] (--all lists them)")

    source = report.planned_from
    redo = [s for s in report.plan if s.action != "reuse damaged"]
    damaged = [s for s in report.plan if s.action == "reuse damaged"]
    if redo:
        console.print(f"--resume would redo (planned from {source}):")
        for step in redo:
            action = _ACTION.get(step.action, step.action)
            console.print(
                f"  {step.stage}: [bold]{action}[/] - {step.detail}",
                highlight=False,
                soft_wrap=True,
            )
    else:
        console.print(f"--resume would redo: nothing (planned from {source})")
    if damaged:
        console.print(
            f"--resume would reuse these damaged stages as they are (delete their {DONE} "
            "to have them redone):"
        )
        for step in damaged:
            made = report.dependents.get(step.stage)
            also = f" - made from it: {', '.join(made)}" if made else ""
            console.print(f"  {step.stage}{also}", highlight=False, soft_wrap=True)

    problems, warnings = len(report.problems), len(report.warnings)
    if problems:
        console.print(f"[bold red]{problems} problem(s)[/], {warnings} warning(s)")
        raise typer.Exit(PROBLEMS_EXIT_CODE)
    console.print(f"[green]healthy[/]: no problems, {warnings} warning(s)")
