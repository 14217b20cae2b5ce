"""The rich progress bar of every long stage: count, a free ``info`` field (loss,
images/s), elapsed and remaining time, on stderr (on a terminal only)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console | None = None) -> Progress:
    """A progress bar; tasks are added with ``info=""`` and updated with ``info=...``.
    Off where the console is no terminal (a log file, a pipe, a batch job): there rich
    would print each bar's last state, repeating the line each epoch already writes."""
    console = console or Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
