"""``doll ablate``: a grid of runs over varied keys, sharing one stage cache, and one table
with a row per grid point."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from doll_core import markdown
from doll_core.atomic import atomic_write_text
from doll_core.errors import DollError
from doll_core.experiment.loading import (
    read_experiment_file,
    resolve_relative_paths,
    validate_experiment,
)
from doll_core.experiment.overrides import apply_overrides, parse_vary, set_dotted
from doll_core.experiment.report import (
    LOCALIZATION_ORDER,
    mean_std,
    results_csv,
    save_localization_chart,
    save_overlay_grid,
)
from doll_core.experiment.results_file import read_results
from doll_core.experiment.runner import (
    clear_half_written_images,
    image_cache_folder,
    run_experiment,
)
from doll_core.locking import folder_lock
from doll_core.markdown import score_title
from doll_core.registry import Registry
from doll_core.relocation import relocatable_within
from doll_core.segmentation.compare import interval
from doll_core.training.distributed import launched_rank

#: The largest grid ``doll ablate`` runs without ``--max-points``: 10,000 points planned
#: for 35 s and 1.6 GB before the first of weeks of work began, without a word.
MAX_POINTS = 256


def grid_points(varied: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the varied values, as ``{key: value}``, first key slowest."""
    keys = [key for key, _ in varied]
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(values for _, values in varied))
    ]


def point_name(index: int, point: Mapping[str, Any]) -> str:
    text = "-".join(f"{key.split('.')[-1]}={_show(value)}" for key, value in point.items())
    return f"{index:02d}-" + (re.sub(r"[^A-Za-z0-9_.=,-]+", "_", text)[:80] or "point")


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def file_grid(document: Mapping[str, Any], path: Path) -> list[tuple[str, list[Any]]]:
    """The ``[ablation] vary`` table of an experiment document, checked."""
    table = document.get("ablation", {})
    vary = table.get("vary", {}) if isinstance(table, dict) else {}
    if not isinstance(vary, dict):
        raise DollError(f"{path}: ablation.vary must be a table of KEY = [V1, V2, ...]")
    grid = []
    for key, values in _flatten(vary):
        if not isinstance(values, list) or len(values) < 2:
            raise DollError(f"{path}: ablation.vary.{key} must list at least two values")
        grid.append((key, values))
    return grid


def _flatten(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"explanation": {"explainer": [...]}}`` (an unquoted dotted TOML key) and
    ``{"explanation.explainer": [...]}`` both give ``("explanation.explainer", [...])``."""
    items = []
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += _flatten(value, f"{name}.")
        else:
            items.append((name, value))
    return items


def grid_documents(
    path: str | Path,
    vary: Sequence[str] = (),
    overrides: Sequence[str] = (),
    *,
    registry: Registry | None = None,
    max_points: int = MAX_POINTS,
) -> list[tuple[str, dict[str, Any], Any, dict[str, Any]]]:
    """Every grid point of the experiment file ``path`` as ``(name, {key: value},
    experiment, resolved document)``, each validated; the grid is the file's ``[ablation]
    vary`` table, then each ``vary`` item (``KEY=V1,V2``; a key given both ways takes the
    command line's values).

    :raises DollError: for nothing to vary, a key varied twice, more than ``max_points``
        points (before any is validated), or a point that is not a valid experiment.
    """
    path = Path(path)
    base = apply_overrides(read_experiment_file(path), list(overrides))
    varied = file_grid(base, path)
    cli = [parse_vary(item) for item in vary]
    if len({key for key, _ in cli}) != len(cli):
        raise DollError("each key may be varied once")
    for key, values in cli:
        varied = [(k, v) for k, v in varied if k != key] + [(key, values)]
    if not varied:
        raise DollError(
            f"nothing to vary: give --vary KEY=V1,V2 or an [ablation] vary table in {path}"
        )
    size = math.prod(len(values) for _, values in varied)
    if size > max_points:
        sizes = " x ".join(f"{len(values)} ({key})" for key, values in varied)
        raise DollError(
            f"the grid has {size:,} points ({sizes}), more than --max-points {max_points}: "
            "each point is a whole run (fine-tuning at least), so this is likely a mistake; "
            "vary fewer values, or pass --max-points to run it anyway"
        )
    prepared = []
    for index, point in enumerate(grid_points(varied)):
        document = json.loads(json.dumps(base))
        for key, value in point.items():
            set_dotted(document, key, value)
        document = resolve_relative_paths(document, path.resolve().parent)
        name = point_name(index, point)
        experiment = validate_experiment(document, source=f"{path} [{name}]", registry=registry)
        prepared.append((name, point, experiment, experiment.document()))
    return prepared


def run_ablation(
    path: str | Path,
    vary: Sequence[str],
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    device: str | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    registry: Registry | None = None,
    max_points: int = MAX_POINTS,
) -> dict[str, Any]:
    """Validate every grid point first, then run them in order with one shared stage
    folder (``out/stages``), and write ``ablation.{json,csv,md}`` and figures.
    A grid of more than ``max_points`` points is refused before any is validated.

    The grid is the file's ``[ablation] vary`` table, then each ``vary`` item
    (``KEY=V1,V2``; a key given both ways takes the command line's values)."""
    prepared = grid_documents(path, vary, overrides, registry=registry, max_points=max_points)
    keys = list(prepared[0][1]) if prepared else []
    out = Path(out).absolute()
    with (
        folder_lock(out, "ablation folder"),
        folder_lock(out / "stages", "stage folder"),
        relocatable_within(out),
    ):
        clear_half_written_images(image_cache_folder(out / "stages"), out)
        points: list[dict[str, Any]] = []
        for name, point, experiment, document in prepared:
            if echo is not None:
                echo(f"grid point {name}")
            results = run_experiment(
                experiment,
                document,
                out / "points" / name,
                stages=out / "stages",
                resume=resume,
                device=device,
                progress=progress,
                echo=echo,
                registry=registry,
            )
            points.append({"name": name, "values": point, "results": results})
        report = ablation_report(keys, points)
        if launched_rank() == 0:  # under torchrun, rank 0 writes
            write_ablation_report(out, report, points)
        return report


def ablation_report(varied: Sequence[str], points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The varied keys and one row per grid point (``name``, ``values``, ``results``)."""
    return {
        "varied": list(varied),
        "points": [
            {
                "name": p["name"],
                "values": p["values"],
                "row": ablation_row(p["values"], p["results"]),
            }
            for p in points
        ],
    }


def write_ablation_report(
    out: Path, report: Mapping[str, Any], points: Sequence[Mapping[str, Any]]
) -> list[Path]:
    """``ablation.{json,csv,md}`` and the figures of an ablation folder."""
    report = {**report, "correlations": metric_correlations([p["row"] for p in report["points"]])}
    atomic_write_text(out / "ablation.json", json.dumps(report, indent=2, default=str) + "\n")
    rows = [p["row"] for p in report["points"]]
    atomic_write_text(out / "ablation.csv", results_csv(rows))
    correlations = metric_correlations(rows)
    text = ablation_markdown(rows)
    if correlations:
        text += "\n" + correlations_markdown(correlations)
    atomic_write_text(out / "ablation.md", text)
    _ablation_figures(out, points)
    return [out / "ablation.json", out / "ablation.csv", out / "ablation.md"]


def rebuild_ablation_report(out: str | Path) -> dict[str, Any]:
    """Re-read every grid point's ``results.json`` under ``out/points`` and rewrite the
    ablation's table and figures (``doll report ABLATION_DIR``)."""
    out = Path(out)
    try:
        saved = json.loads((out / "ablation.json").read_text())
        points = [
            {
                "name": point["name"],
                "values": point["values"],
                "results": read_results(out / "points" / point["name"]),
            }
            for point in saved["points"]
        ]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise DollError(f"{out}: unreadable ablation files: {exc}") from None
    report = ablation_report(saved["varied"], points)
    write_ablation_report(out, report, points)
    return report


def headline_init(inits: Sequence[str]) -> str:
    return "doll" if "doll" in inits else inits[0]


def ablation_row(values: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """One flat row: varied values, downstream scores of the headline init (``doll`` where
    run) per task and budget (test mIoU and Dice, and the best validation mIoU that a
    choice between grid points is made on), its paired differences to the other inits (bootstrap
    interval where the runs kept per-image sums, else paired t), label localization,
    label images/s, stage seconds."""
    row: dict[str, Any] = {key: _show(value) for key, value in values.items()}
    # (the varied keys come first, so the table's first columns name the grid point)
    summary = results["finetune"]["summary"]
    inits = list(dict.fromkeys(r["init"] for r in summary))
    if inits:
        init = headline_init(inits)
        for entry in (r for r in summary if r["init"] == init):
            prefix = f"{entry['task']} {init} n={entry['budget']}"
            row[f"{prefix} mIoU"] = round(entry["test_miou"], 4)
            several = entry["seeds"] > 1
            row[f"{prefix} mIoU std"] = round(entry["test_miou_std"], 4) if several else None
            row[f"{prefix} Dice"] = round(entry["test_mdice"], 4)
            row[f"{prefix} Dice std"] = round(entry["test_mdice_std"], 4) if several else None
            if "best_val_miou" in entry:  # (results written before it was kept lack it)
                row[f"{prefix} best val mIoU"] = round(entry["best_val_miou"], 4)
                std = entry["best_val_miou_std"]
                row[f"{prefix} best val mIoU std"] = round(std, 4) if several else None
    for comparison in results["finetune"].get("comparisons", []):
        name = f"{comparison['task']} {comparison['treated']}-{comparison['control']}"
        chosen = comparison["bootstrap"] or comparison["t"]  # the wider evidence, if kept
        row[f"{name} n={comparison['budget']} ΔmIoU (95% CI)"] = interval(chosen)
    labels = results.get("labels") or {}
    localization = labels.get("localization") or {}
    for name in LOCALIZATION_ORDER:
        if name in localization:
            row[f"labels {name}"] = round(localization[name], 4)
    if labels:
        row["labels images/s"] = labels.get("images_per_second")
    evaluation = results.get("evaluation") or {}
    for name, entry in (evaluation.get("metrics") or {}).items():
        mean = entry["mean"]
        column = score_title(f"eval {name}", entry["higher_is_better"])
        row[column] = round(mean, 4) if mean is not None else None
    for kind, seconds in results.get("stage_seconds", {}).items():
        row[f"{kind} s"] = seconds
    return row


#: The columns of an ablation row that score explanations or labels (``eval …`` from
#: ``[evaluation]``, ``labels …`` from the label store's localization)
QUALITY_PREFIXES = ("eval ", "labels ")


def metric_correlations(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Spearman's rank correlation, across the grid points, between each explanation- or
    label-quality column and each downstream test mIoU column (``… mIoU`` of the
    headline init): which quality predicts good pre-training labels, with its two-sided
    permutation p-value (:func:`permutation_p`). Columns with fewer than three defined
    pairs are left out; ``rho`` and ``p`` are ``None`` where a column is constant."""
    if len(rows) < 3:
        return []
    import torch

    from doll_core.metrics.similarity import spearman

    columns = list(rows[0])
    qualities = [
        c
        for c in columns
        if c.startswith(QUALITY_PREFIXES) and not c.endswith((" std", "images/s", " s"))
    ]
    outcomes = [c for c in columns if c.endswith(" mIoU") and " n=" in c and "best val" not in c]
    found = []
    for quality in qualities:
        for outcome in outcomes:
            pairs = [
                (float(r[quality]), float(r[outcome]))
                for r in rows
                if isinstance(r.get(quality), int | float)
                and isinstance(r.get(outcome), int | float)
            ]
            if len(pairs) < 3:
                continue
            a = torch.tensor([[p[0] for p in pairs]], dtype=torch.float64)
            b = torch.tensor([[p[1] for p in pairs]], dtype=torch.float64)
            rho = float(spearman(a, b)[0])
            defined = rho == rho  # nan != nan
            found.append(
                {
                    "quality": quality,
                    "outcome": outcome,
                    "rho": round(rho, 3) if defined else None,
                    "p": round(permutation_p(a[0], b[0], rho), 4) if defined else None,
                    "points": len(pairs),
                }
            )
    return found


#: Up to this many grid points the permutation p-value enumerates every ordering.
EXACT_PERMUTATIONS = 8


def permutation_p(a: Any, b: Any, rho: float, *, draws: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of Spearman's ``rho`` of ``a`` and ``b`` (float64 ``[n]``): the
    share of orderings of ``b`` whose correlation with ``a`` is at least as far from 0,
    over every ordering for ``n`` <= 8, else over ``draws`` seeded random ones."""
    import torch

    from doll_core.metrics.similarity import spearman

    n = int(a.shape[0])
    if n <= EXACT_PERMUTATIONS:
        orders = torch.tensor(list(itertools.permutations(range(n))))
    else:
        generator = torch.Generator().manual_seed(seed)
        orders = torch.argsort(torch.rand(draws, n, generator=generator), dim=1)
    shuffled = b[orders]  # [P, n]
    values = spearman(a.expand_as(shuffled), shuffled)
    return float((values.abs() >= abs(rho) - 1e-12).double().mean())


def correlations_markdown(correlations: Sequence[Mapping[str, Any]]) -> str:
    """The correlations of :func:`metric_correlations` as a table, quality by outcome."""
    outcomes = list(dict.fromkeys(c["outcome"] for c in correlations))
    qualities = list(dict.fromkeys(c["quality"] for c in correlations))
    cell = {(c["quality"], c["outcome"]): c for c in correlations}
    points = max(c["points"] for c in correlations)
    lines = [
        "## Which explanation quality predicts good pre-training labels?",
        "",
        f"Spearman's rank correlation across the {points} grid points between each quality "
        "column and each downstream test mIoU (for a ↓ metric, a negative value means the "
        "better-scoring points gave better downstream results), with its two-sided "
        "permutation p-value. With few grid points only a near-perfect correlation can be "
        "told from chance.",
        "",
    ]
    rows = []
    for quality in qualities:
        values = [quality]
        for outcome in outcomes:
            found = cell.get((quality, outcome))
            if found is None or found["rho"] is None:
                values.append("-")
            else:
                values.append(f"{found['rho']:+.2f} (p {found['p']:.2f})")
        rows.append(values)
    return "\n".join(lines + markdown.table_lines(["quality", *outcomes], rows)) + "\n"


def ablation_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The ablation table; a ``X`` / ``X std`` column pair becomes one ``mean ± std`` cell."""
    if not rows:
        return ""
    columns = [c for c in rows[0] if not c.endswith(" std")]
    return markdown.table(columns, [[_cell(row, column) for column in columns] for row in rows])


def _cell(row: Mapping[str, Any], column: str) -> str:
    """A table cell: ``mean ± std`` where the row has ``COLUMN std``, floats to 3 places."""
    value = row.get(column)
    if f"{column} std" in row:
        return mean_std(value, row[f"{column} std"])
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


#: Columns the terminal table keeps besides the varied keys (the files keep all).
TERMINAL_COLUMNS = (
    "mIoU",
    "ΔmIoU (95% CI)",
    "labels pointing_game",
    "labels iou",
    "labels images/s",
)


def rich_ablation_table(rows: Sequence[Mapping[str, Any]], varied: Sequence[str]) -> Any:
    """The headline columns of the ablation: varied keys, downstream mIoU, label
    localization and speed (``ablation.md`` has every column)."""
    from rich.table import Table

    table = Table(title="ablation (test scores: mean ± std over seeds)")
    if not rows:
        return table
    columns = [c for c in rows[0] if c in varied or c.endswith(TERMINAL_COLUMNS)]
    for column in columns:
        table.add_column(column, justify="right", overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row, column) for column in columns))
    return table


def _ablation_figures(out: Path, points: Sequence[Mapping[str, Any]]) -> None:
    scores = {
        p["name"]: (p["results"].get("labels") or {}).get("localization") or {} for p in points
    }
    if any(s.get("maps") for s in scores.values()):
        save_localization_chart(scores, out / "figures" / "localization.png")
    stores: dict[str, str] = {}
    for p in points:
        folder = p["results"].get("labels_folder")
        if folder and folder not in stores.values():
            stores[p["name"]] = folder
    if stores:
        phantom = points[0]["results"].get("phantom")
        save_overlay_grid(stores, out / "figures" / "labels-overlay.png", 6, phantom)
