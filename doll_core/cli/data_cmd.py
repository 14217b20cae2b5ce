"""``doll data ...``: write the phantom, check a dataset folder, picture a phantom."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from doll_core.errors import DollError
from doll_core.interfaces import optional_member
from doll_core.progress import progress_bar
from doll_core.registry import get_registry

data_app = typer.Typer(help="Generate, inspect and picture datasets.", no_args_is_help=True)


@data_app.command("phantom")
def phantom(
    out: Path = typer.Option(..., "--out", help="Folder to write (created; must be empty)."),
    n_train: int = typer.Option(500, "--n-train", min=0, help="CheXpert-layout training images."),
    n_valid: int = typer.Option(100, "--n-valid", min=0, help="CheXpert-layout validation images."),
    n_organs: int = typer.Option(100, "--n-organs", min=0, help="Organ-set images (segfolder)."),
    n_infection: int = typer.Option(
        120, "--n-infection", min=0, help="Infection-set images (COVID-QU-Ex layout)."
    ),
    n_jsrt: int = typer.Option(0, "--n-jsrt", min=0, help="JSRT/SCR-layout images (8 MB each)."),
    size: int = typer.Option(256, "--size", min=32, max=2048, help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same phantom."),
    finding_contrast: float | None = typer.Option(
        None,
        "--finding-contrast",
        help="Factor on every finding's attenuation change; >1 makes findings easier to see.",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes that render in parallel."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing phantom."),
) -> None:
    """Write a procedural chest X-ray phantom in the real dataset layouts."""
    from doll_core.phantom.labels import FindingsConfig
    from doll_core.phantom.writer import PhantomSpec, write_phantom

    spec = PhantomSpec(
        n_train=n_train,
        n_valid=n_valid,
        n_organs=n_organs,
        n_infection=n_infection,
        n_jsrt=n_jsrt,
        size=size,
        seed=seed,
        findings=FindingsConfig(**given(contrast=finding_contrast)),
    )
    with progress_bar() as bar:
        task = bar.add_task("phantom", total=None, info="")

        def update(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:.1f} images/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, info=rate)

        manifest = write_phantom(out, spec, workers=workers, overwrite=overwrite, progress=update)
    images = ", ".join(f"{kind} {count}" for kind, count in manifest["images"].items())
    typer.echo(
        f"wrote {out}: {images} images in {manifest['seconds']} s "
        f"({manifest['images_per_second']} images/s)"
    )


def given(**values: Any) -> dict[str, Any]:
    """The options a user gave (``None``: not given, so the config field's default holds)."""
    return {key: value for key, value in values.items() if value is not None}


def parse_set(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> a dict. Every command's ``--set`` reads a value as ``doll
    run`` does (:func:`~doll_core.experiment.overrides.parse_value`): a TOML value
    (``3``, ``true``, ``[8, "all"]``, ``{width = 4}``, ``"x"``), else the text itself."""
    from doll_core.experiment.overrides import parse_value, split_assignment

    options: dict[str, Any] = {}
    for item in items:
        key, raw = split_assignment(item)
        options[key] = parse_value(raw)
    return options


@data_app.command("inspect")
def inspect(
    kind: str = typer.Argument(
        ...,
        help="Dataset reader: chexpert, nih, padchest, mimic, csv, multi, segfolder, jsrt, "
        "covid-qu-ex (any dataset plugin).",
    ),
    root: Path = typer.Argument(..., help="The dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    option: list[str] = typer.Option(
        [], "--set", help="Reader option KEY=VALUE (a TOML value), e.g. --set 'classes=[\"a\"]'."
    ),
) -> None:
    """Count what a dataset folder holds, per split: how a user checks a download."""
    registry = get_registry()
    info = registry.get("dataset", kind)
    if not root.is_dir():
        raise DollError(f"dataset folder not found: {root}")
    options = parse_set(option)
    splits = list(info.metadata.get("splits") or [None])
    report: dict[str, Any] = {"kind": kind, "root": str(root), "splits": {}}
    problems: dict[str, str] = {}
    for split in splits:
        split_options = dict(options, **({"split": split} if split else {}))
        try:
            dataset = registry.create("dataset", kind, root=root, **split_options)
        except DollError as exc:
            problems[split or kind] = str(exc)
            continue
        summary = optional_member(dataset, "dataset", "summary")
        report["splits"][split or "all"] = summary() if summary else {"images": len(dataset)}
    if not report["splits"]:
        raise DollError("; ".join(problems.values()))
    report["problems"] = problems
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console()
    for split, summary in report["splits"].items():
        for name, part in summary.get("sources", {}).items():  # several sources as one
            _print_summary(console, f"{kind} · {split} · {name}", part)
        _print_summary(console, f"{kind} · {split}", {k: v for k, v in summary.items()
                                                       if k != "sources"})  # fmt: skip
    for split, problem in problems.items():
        typer.echo(f"warning: {split}: {problem}", err=True)


def _print_summary(console: Console, title: str, summary: dict[str, Any]) -> None:
    facts = Table(title=title, title_justify="left", show_header=False)
    facts.add_column("what", style="bold")
    facts.add_column("value")
    for key, value in summary.items():
        if key in ("observations", "pixel_fraction", "ignored_fraction", "mask_values", "skipped"):
            continue
        facts.add_row(
            key,
            Text(
                ", ".join(map(str, value))
                if isinstance(value, list)
                else json.dumps(value)
                if isinstance(value, dict)
                else str(value)
            ),
        )
    console.print(facts)
    if "observations" in summary:
        table = Table(show_lines=False)
        for column in ("observation", "positive", "negative", "uncertain", "blank"):
            table.add_column(column, justify="left" if column == "observation" else "right")
        for name, counts in summary["observations"].items():
            table.add_row(
                name, *(str(counts[c]) for c in ("positive", "negative", "uncertain", "blank"))
            )
        console.print(table)
    if "pixel_fraction" in summary:
        _print_mask_tables(console, summary)
    for skipped in summary.get("skipped", []):
        typer.echo(f"warning: skipped {skipped['path']}: {skipped['reason']}", err=True)


def _print_mask_tables(console: Console, summary: dict[str, Any]) -> None:
    ignored = summary.get("ignored_fraction", {})
    table = Table()
    table.add_column("class")
    table.add_column("pixel fraction", justify="right")
    table.add_column("ignored fraction", justify="right")
    for name, fraction in summary["pixel_fraction"].items():
        table.add_row(Text(name), f"{fraction:.4f}", f"{ignored.get(name, 0.0):.4f}")
    console.print(table)
    values = Table(title="mask values met (fraction of the mask files' pixels)")
    values.add_column("class")
    values.add_column("value", justify="right")
    values.add_column("fraction", justify="right")
    for name, fractions in summary.get("mask_values", {}).items():
        for value, fraction in fractions.items():
            values.add_row(Text(name), value, f"{fraction:.4f}")
    console.print(values)


@data_app.command("preview")
def preview(
    root: Path = typer.Argument(..., help="A phantom folder (from 'doll data phantom')."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    count: int = typer.Option(12, "--count", min=1, max=64, help="Number of images."),
    split: str = typer.Option("train", "--split", help="train or valid."),
) -> None:
    """Save a grid of phantom images with their ground-truth lesion masks outlined."""
    from doll_core.phantom.preview import save_preview

    typer.echo(f"wrote {save_preview(root, out, count=count, split=split)}")
