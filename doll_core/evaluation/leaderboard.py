"""A leaderboard of explainers: one row per classifier x explainer, one column per metric
with its direction, the mean over maps and a 95% confidence interval, and each
explainer's rank among those of its classifier.

The interval is a percentile bootstrap over *images* (maps of one image are not
independent): each replicate draws the images with replacement and takes the mean of the
defined scores of the maps they hold. Every row of a classifier is resampled with the same
draws, so the rows' intervals are paired as their maps are.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doll_core import markdown
from doll_core.atomic import atomic_write_text
from doll_core.evaluation.engine import ExplainerEvaluation
from doll_core.json_values import json_safe
from doll_core.markdown import score_title

LEADERBOARD_FILES = ("evaluation.md", "evaluation.csv", "evaluation.json", "evaluation.png")


def bootstrap_weights(images: int, replicates: int, seed: int) -> np.ndarray:
    """float64 ``[R, images]``: how often each image is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, images, size=(replicates, images))
    weights = np.zeros((replicates, images))
    np.add.at(weights, (np.arange(replicates)[:, None], draws), 1.0)
    return weights


def image_mean_interval(
    values: np.ndarray, image: np.ndarray, images: int, weights: np.ndarray | None
) -> dict[str, Any]:
    """Mean of the defined ``values`` ``[M]`` and its bootstrap interval over the images
    ``image`` ``[M]`` (indices below ``images``) that they belong to."""
    defined = ~np.isnan(values)
    count = int(defined.sum())
    if count == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    sums = np.bincount(image[defined], weights=values[defined], minlength=images)
    counts = np.bincount(image[defined], minlength=images).astype(np.float64)
    mean = float(sums.sum() / counts.sum())
    low = high = math.nan
    if weights is not None and weights.shape[0] > 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            replicated = (weights @ sums) / (weights @ counts)
        replicated = replicated[np.isfinite(replicated)]
        if replicated.size:
            low, high = (float(q) for q in np.percentile(replicated, [2.5, 97.5]))
    return {"mean": mean, "low": low, "high": high, "n": count}


def _ranks(means: Sequence[float], higher_is_better: bool) -> list[float | None]:
    """1 = best; tied means share their average rank; an undefined mean has none."""
    defined = [(m if higher_is_better else -m, i) for i, m in enumerate(means) if not math.isnan(m)]
    ordered = sorted(defined, key=lambda item: -item[0])
    ranks: list[float | None] = [None] * len(means)
    position = 0
    while position < len(ordered):
        end = position
        while end + 1 < len(ordered) and ordered[end + 1][0] == ordered[position][0]:
            end += 1
        for k in range(position, end + 1):
            ranks[ordered[k][1]] = (position + end) / 2 + 1
        position = end + 1
    return ranks


def build_leaderboard(
    evaluations: Sequence[ExplainerEvaluation],
    metrics: Mapping[str, Any],
    *,
    replicates: int,
    seed: int,
) -> dict[str, Any]:
    """The leaderboard (JSON-ready) of ``evaluations``; ``metrics``: name -> the built
    metric (its ``category`` and ``higher_is_better`` head the columns)."""
    columns: list[dict[str, Any]] = [
        {
            "name": name,
            "category": str(metric.category),
            "higher_is_better": bool(metric.higher_is_better),
        }
        for name, metric in metrics.items()
    ]
    rows: list[dict[str, Any]] = []
    weights_of: dict[int, np.ndarray | None] = {}
    for evaluation in evaluations:
        row: dict[str, Any] = {
            "classifier": evaluation.classifier,
            "explainer": evaluation.explainer,
            "images": evaluation.images,
            "maps": evaluation.maps,
            "explain_seconds_per_image": (
                round(evaluation.explain_seconds / evaluation.images, 4)
                if evaluation.images
                else None
            ),
            "error": evaluation.error,
            "scores": {},
        }
        if evaluation.error is None:
            if evaluation.images not in weights_of:
                weights_of[evaluation.images] = (
                    bootstrap_weights(evaluation.images, replicates, seed) if replicates else None
                )
            weights = weights_of[evaluation.images]
            for name, values in evaluation.metrics.items():
                cell = image_mean_interval(
                    values.values, evaluation.image, evaluation.images, weights
                )
                cell["seconds_per_image"] = round(values.seconds / max(evaluation.images, 1), 4)
                if values.steps:
                    cell["steps"] = {
                        step: image_mean_interval(
                            step_values, evaluation.image, evaluation.images, None
                        )["mean"]
                        for step, step_values in values.steps.items()
                    }
                row["scores"][name] = cell
        rows.append(row)
    for column in columns:
        for classifier in dict.fromkeys(r["classifier"] for r in rows):
            mine = [r for r in rows if r["classifier"] == classifier]
            means = [r["scores"].get(column["name"], {}).get("mean", math.nan) for r in mine]
            for row, rank in zip(mine, _ranks(means, column["higher_is_better"]), strict=True):
                if column["name"] in row["scores"]:
                    row["scores"][column["name"]]["rank"] = rank
    return {
        "columns": columns,
        "rows": rows,
        "interval": f"95% percentile bootstrap over images, {replicates} replicates, seed {seed}",
    }


def leaderboard_summary(board: dict[str, Any]) -> dict[str, Any]:
    """What a run's results keep of a leaderboard: each metric's direction and category,
    its mean over the classifiers' rows, and every row's cells."""
    metrics: dict[str, Any] = {}
    for column in board["columns"]:
        means = [
            r["scores"][column["name"]]["mean"]
            for r in board["rows"]
            if not r["error"] and column["name"] in r["scores"]
        ]
        defined = [m for m in means if m == m]  # nan != nan
        metrics[column["name"]] = {
            "category": column["category"],
            "higher_is_better": column["higher_is_better"],
            "mean": sum(defined) / len(defined) if defined else None,
        }
    rows = [
        {
            "classifier": r["classifier"],
            "explainer": r["explainer"],
            "maps": r["maps"],
            "error": r["error"],
            "scores": {
                n: {k: c.get(k) for k in ("mean", "low", "high", "n")}
                for n, c in r["scores"].items()
            },
        }
        for r in board["rows"]
    ]
    return {"metrics": metrics, "rows": rows, "interval": board["interval"]}


def _number(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def markdown_table(board: Mapping[str, Any]) -> str:
    """One row per classifier x explainer; each metric cell: mean [95% CI] (rank)."""
    columns = board["columns"]
    header = [
        "classifier",
        "explainer",
        *(score_title(c["name"], c["higher_is_better"]) for c in columns),
        "maps",
        "explain s / image",
    ]
    rows = []
    for row in board["rows"]:
        if row["error"]:
            reason = row["error"].split(";")[0]
            cells = ["—"] * len(columns) + ["0", f"refused: {reason[:100]}"]
        else:
            cells = []
            for column in columns:
                cell = row["scores"][column["name"]]
                interval = f" [{_number(cell['low'])}, {_number(cell['high'])}]"
                shown = _number(cell["mean"]) + ("" if math.isnan(cell["low"]) else interval)
                rank = cell.get("rank")
                cells.append(shown + (f" ({rank:g})" if rank is not None else ""))
            cells += [str(row["maps"]), _number(row["explain_seconds_per_image"])]
        rows.append([row["classifier"], row["explainer"], *cells])
    return markdown.table(header, rows)


def csv_text(board: Mapping[str, Any]) -> str:
    """One line per classifier x explainer: ``METRIC_mean``, ``_low``, ``_high``, ``_n``,
    ``_rank`` per metric."""
    names = [c["name"] for c in board["columns"]]
    fields = ["classifier", "explainer", "images", "maps", "explain_seconds_per_image", "error"]
    fields += [f"{n}_{part}" for n in names for part in ("mean", "low", "high", "n", "rank")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in board["rows"]:
        line = {key: row[key] for key in fields[:6]}
        for name in names:
            cell = row["scores"].get(name, {})
            for part in ("mean", "low", "high", "n", "rank"):
                line[f"{name}_{part}"] = cell.get(part)
        writer.writerow(line)
    return buffer.getvalue()


def save_rank_figure(board: Mapping[str, Any], path: Path) -> Path | None:
    """A heat map, explainers x metrics per classifier, coloured by rank (dark = best) and
    annotated with the means; ``None`` when no row has scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in board["rows"] if not r["error"]]
    columns = board["columns"]
    if not rows or not columns:
        return None
    classifiers = list(dict.fromkeys(r["classifier"] for r in rows))
    height = sum(len([r for r in rows if r["classifier"] == c]) for c in classifiers)
    figure, axes = plt.subplots(
        len(classifiers),
        1,
        figsize=(1.0 + 1.05 * len(columns), 0.9 + 0.42 * height + 0.6 * len(classifiers)),
        squeeze=False,
    )
    for axis, classifier in zip(axes[:, 0], classifiers, strict=True):
        mine = [r for r in rows if r["classifier"] == classifier]
        ranks = np.array(
            [[r["scores"][c["name"]].get("rank") or np.nan for c in columns] for r in mine],
            dtype=float,
        )
        axis.imshow(ranks, cmap="viridis", vmin=1, vmax=max(len(mine), 2), aspect="auto")
        for i, row in enumerate(mine):
            for j, column in enumerate(columns):
                axis.text(
                    j,
                    i,
                    _number(row["scores"][column["name"]]["mean"]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if ranks[i, j] <= (len(mine) + 1) / 2 else "black",
                )
        axis.set_xticks(range(len(columns)))
        axis.set_xticklabels(
            [score_title(c["name"], c["higher_is_better"]) for c in columns],
            rotation=40,
            ha="right",
            fontsize=7,
        )
        axis.set_yticks(range(len(mine)))
        axis.set_yticklabels([r["explainer"] for r in mine], fontsize=8)
        axis.set_title(f"{classifier}: rank per metric (dark = best)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def read_leaderboard(path: Path) -> dict[str, Any]:
    """A leaderboard written by :func:`write_leaderboard` (``evaluation.json``), with its
    undefined values (``null``) back to ``nan``."""
    board: dict[str, Any] = json.loads(Path(path).read_text())
    for row in board["rows"]:
        for cell in row["scores"].values():
            for key in ("mean", "low", "high"):
                if cell.get(key) is None:
                    cell[key] = math.nan
    return board


def write_leaderboard(out: Path, board: Mapping[str, Any], header: str = "") -> list[Path]:
    """Write ``evaluation.md``, ``.csv``, ``.json`` and the rank figure into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    text = (header + "\n\n" if header else "") + markdown_table(board)
    text += f"\nCells: mean [{board['interval']}] (rank among the explainers of the classifier).\n"
    written = []
    for name, content in (
        ("evaluation.md", text),
        ("evaluation.csv", csv_text(board)),
        ("evaluation.json", json.dumps(json_safe(dict(board)), indent=2) + "\n"),
    ):
        atomic_write_text(out / name, content)
        written.append(out / name)
    figure = save_rank_figure(board, out / "evaluation.png")
    if figure is not None:
        written.append(figure)
    return written
