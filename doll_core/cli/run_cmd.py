"""``doll run``, ``doll ablate`` and ``doll report``: whole experiments from TOML files."""

from __future__ import annotations

from pathlib import Path

import typer

from doll_core.devices import device_option
from doll_core.experiment.ablation import MAX_POINTS
from doll_core.training.distributed import launched_rank

SET_HELP = "Override any experiment key by its dotted path, KEY=VALUE (TOML value)."


def _default_out(experiment: Path, kind: str) -> Path:
    return Path("runs") / f"{experiment.stem}{'' if kind == 'run' else '-' + kind}"


def run_command(
    experiment: Path = typer.Argument(..., help="Experiment file (TOML)."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/NAME)."),
    stages: Path | None = typer.Option(
        None, "--stages", help="Stage folder to reuse and fill (default OUT/stages)."
    ),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    device: str | None = typer.Option(
        None, "--device", callback=device_option, help="auto, cpu, cuda, cuda:N or mps."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run every stage of an experiment; finished stages with the same settings are reused."""
    from rich.console import Console

    from doll_core.experiment.loading import load_experiment
    from doll_core.experiment.report import rich_table
    from doll_core.experiment.runner import run_experiment

    parsed, document = load_experiment(experiment, settings)
    out = out or _default_out(experiment, "run")
    console = Console()
    results = run_experiment(
        parsed,
        document,
        out,
        stages=stages,
        resume=resume,
        device=device,
        progress=not quiet,
        echo=console.print,
    )
    if launched_rank() == 0:
        console.print(rich_table(results))
        console.print(f"report: {out / 'results.md'}, figures in {out / 'figures'}")


def plan_command(
    experiment: Path = typer.Argument(..., help="Experiment file (TOML)."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/NAME)."),
    stages: Path | None = typer.Option(None, "--stages", help="Stage folder (default OUT/stages)."),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
    device: str | None = typer.Option(
        None, "--device", callback=device_option, help="auto, cpu, cuda, cuda:N or mps."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show an experiment's resolved settings with their help text, and which stages
    doll run would compute or reuse in the run folder, without running anything: what to
    check before a long GPU run."""
    import dataclasses
    import json

    from rich.console import Console
    from rich.table import Table

    from doll_core.experiment.loading import load_experiment
    from doll_core.experiment.preview import resolved_settings, stage_plan

    parsed, _ = load_experiment(experiment, settings)
    folder = stages or (out or _default_out(experiment, "run")) / "stages"
    values = resolved_settings(parsed)
    steps = stage_plan(parsed, folder, device)
    if as_json:
        plan = [dataclasses.asdict(step) for step in steps]
        data = {"settings": [dataclasses.asdict(v) for v in values], "stages": plan}
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table("setting", "value", "help", title=f"{parsed.name}: resolved settings")
    for value in values:
        table.add_row(value.key, value.value, value.help)
    plan_table = Table("stage", "doll run would", title=f"stages in {folder}")
    for step in steps:
        plan_table.add_row(step.name, step.action)
    console = Console()
    console.print(table)
    console.print(plan_table)
    reused = sum(step.action == "reuse" for step in steps)
    console.print(f"{len(steps) - reused} stage(s) to compute, {reused} to reuse")


def ablate_command(
    experiment: Path = typer.Argument(..., help="Experiment file (TOML)."),
    vary: list[str] = typer.Option(
        [], "--vary", help="KEY=V1,V2: one grid axis (adds to the file's [ablation] vary)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Folder (default runs/NAME-ablate)."),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted ablation."),
    device: str | None = typer.Option(
        None, "--device", callback=device_option, help="auto, cpu, cuda, cuda:N or mps."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    max_points: int = typer.Option(
        MAX_POINTS, "--max-points", min=1, help="Refuse a larger grid (a likely mistake)."
    ),
) -> None:
    """Run the grid of an experiment over the varied keys; shared stages run once."""
    from rich.console import Console

    from doll_core.experiment.ablation import rich_ablation_table, run_ablation

    out = out or _default_out(experiment, "ablate")
    console = Console()
    report = run_ablation(
        experiment,
        vary,
        out,
        overrides=settings,
        max_points=max_points,
        resume=resume,
        device=device,
        progress=not quiet,
        echo=console.print,
    )
    if launched_rank() == 0:
        console.print(rich_ablation_table([p["row"] for p in report["points"]], report["varied"]))
        console.print(f"table: {out / 'ablation.md'}, figures in {out / 'figures'}")


def report_command(
    run_dir: Path = typer.Argument(..., help="A folder written by doll run or doll ablate."),
) -> None:
    """Print a finished run's (or ablation's) table and rebuild its files and figures."""
    from rich.console import Console

    from doll_core.experiment.ablation import rebuild_ablation_report, rich_ablation_table
    from doll_core.experiment.report import load_run, rich_table, write_report
    from doll_core.locking import folder_lock

    console = Console()
    if (run_dir / "ablation.json").is_file():
        with folder_lock(run_dir, "ablation folder"):
            report = rebuild_ablation_report(run_dir)
        console.print(rich_ablation_table([p["row"] for p in report["points"]], report["varied"]))
        console.print(f"wrote {run_dir / 'ablation.md'}, {run_dir / 'ablation.csv'}")
        return
    results, document = load_run(run_dir)
    with folder_lock(run_dir):
        written = write_report(run_dir, results, document)
    console.print(rich_table(results))
    console.print("wrote " + ", ".join(str(p) for p in written))
