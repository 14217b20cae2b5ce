"""Markdown tables, written one way for every table DoLL prints or saves."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def score_title(name: str, higher_is_better: bool) -> str:
    """A score's column title: ``name ↑`` where higher is better, ``name ↓`` where lower
    is."""
    return f"{name} {'↑' if higher_is_better else '↓'}"


def table_lines(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table: ``| a | b |``, the rule ``|---|---|``, then a line per
    row.

    :raises ValueError: when a row has not as many cells as ``header`` (a table that would
        render with shifted columns).
    """
    lines = [_line(header), "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(
                f"a table row has {len(row)} cells for {len(header)} columns: {list(row)}"
            )
        lines.append(_line(row))
    return lines


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """:func:`table_lines` as text, ending in a newline."""
    return "\n".join(table_lines(header, rows)) + "\n"


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
