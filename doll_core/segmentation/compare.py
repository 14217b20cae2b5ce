"""The paper's comparison: fine-tune from ``random``, ``classifier`` and ``doll``
initialisation with several label budgets and seeds, and report mean ± std test mIoU,
the paired differences of ``doll`` against every other init with 95% intervals, the
convergence figures, and the validation curves.

Runs of one task and budget are paired by seed: a seed draws the same labelled subset,
data order and test images whatever the init. :func:`paired_comparisons` gives, for
``doll`` - each other init, the mean difference of test mIoU with a paired t interval over
seeds and a paired bootstrap interval over seeds and test images
(:mod:`doll_core.metrics.paired`). :func:`summarise_runs` adds the convergence figures the
paper claims: the validation curve's area (its mean height over the steps,
:func:`~doll_core.metrics.paired.curve_area`) and the first step at which a run reaches
:data:`CONVERGENCE_FRACTION` of the best validation mIoU of ``random`` with the same seed.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doll_core import markdown
from doll_core.atomic import atomic_write_text
from doll_core.configuration import parse_config
from doll_core.errors import DollError
from doll_core.metrics.paired import (
    best_validation,
    curve_area,
    first_step_reaching,
    paired_bootstrap_interval,
    paired_t_interval,
)
from doll_core.plotting import pyplot, save_figure
from doll_core.relocation import same_record
from doll_core.segmentation.config import FinetuneConfig
from doll_core.segmentation.finetune import finetune

#: the init every paired comparison is about, and the one whose best sets the target
TREATED_INIT = "doll"
REFERENCE_INIT = "random"
#: a run has converged when its validation mIoU reaches this fraction of the reference's best
CONVERGENCE_FRACTION = 0.95


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); ``nan`` for both where a
    value is undefined (an empty validation curve's area), which ``statistics.stdev``
    cannot take (it raises on NaN in Python 3.11)."""
    mean = statistics.fmean(values)
    if not all(math.isfinite(v) for v in values):
        return math.nan, math.nan
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def check_inits(base: dict[str, Any], inits: dict[str, tuple[str, str | None]]) -> None:
    """Validate each init's settings and read its checkpoint the way its runs will: a
    classifier checkpoint built and loaded, a DoLL checkpoint loaded, a user's weights
    file fitted to the model (:func:`~doll_core.segmentation.models.load_user_weights`).

    :raises DollError: naming the init and the problem.
    """
    from doll_core.checkpoint import load_classifier
    from doll_core.segmentation.models import check_user_weights, load_segmenter, probe_segmenter

    for label, (init, path) in inits.items():
        values = {**base, "init": init, "init_path": path}
        config = parse_config(FinetuneConfig, values, source=f"init {label!r}")
        if config.init_path is None:
            continue
        if not config.init_path.is_file():
            raise DollError(f"init {label!r}: checkpoint not found: {config.init_path}")
        try:
            if config.init == "classifier":
                load_classifier(config.init_path, in_channels=config.in_channels)
            elif config.init == "doll":
                load_segmenter(config.init_path)
            elif config.init == "checkpoint":
                probe = probe_segmenter(
                    config.head, config.head_params, config.encoder, config.in_channels
                )
                check_user_weights(probe, config.init_path, allow_partial=config.allow_partial)
        except DollError as exc:
            raise DollError(f"init {label!r}: {exc}") from None


def compare_initialisations(
    base: dict[str, Any],
    inits: dict[str, tuple[str, str | None]],
    budgets: Sequence[int | None],
    seeds: Sequence[int],
    out: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every (init, budget, seed) fine-tuning under ``out`` (each in its own run
    folder, resumable) and summarise. ``inits`` maps a label to ``(init, init_path)``.

    :raises DollError: before any run, for settings a run would refuse or a checkpoint
        that cannot start one (:func:`check_inits`).
    """
    out = Path(out)
    check_inits(base, inits)
    runs: list[dict[str, Any]] = []
    for label, (init, path) in inits.items():
        for budget in budgets:
            for seed in seeds:
                name = f"{label}-n{budget or 'all'}-seed{seed}"
                folder = out / name
                values = {
                    **base,
                    "init": init,
                    "init_path": path,
                    "n_labeled": budget,
                    "seed": seed,
                }
                config = parse_config(FinetuneConfig, values, source=name)
                saved = folder / "config.json"
                current = config.to_record(folder)
                if saved.is_file() and (
                    same_record(json.loads(saved.read_text()), current, config, folder) != current
                ):
                    raise DollError(f"{folder} holds a run with other settings; use another --out")
                if (folder / "test.json").is_file():  # finished with these settings: reuse
                    result = json.loads((folder / "test.json").read_text())
                else:
                    result = finetune(config, folder, resume=(folder / "state.pt").exists())
                runs.append(
                    {
                        "init": label,
                        "budget": budget or "all",
                        "seed": seed,
                        "test_miou": result["test"]["miou"],
                        "test_mdice": result["test"]["mdice"],
                        "curve": result["curve"],
                        "train_images": result["train_images"],
                        "test_per_image": result["test"].get("per_image"),
                    }
                )
                if progress is not None:
                    progress(f"{name}: test mIoU {result['test']['miou']:.4f}")
    summary = summarise_runs(runs, ("init", "budget"))
    comparisons = paired_comparisons(runs, ("budget",))
    report = {"runs": runs, "summary": summary, "comparisons": comparisons}
    atomic_write_text(out / "comparison.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "comparison.md", comparison_table(summary, comparisons))
    save_curves(runs, out / "curves.png")
    return report


def summarise_runs(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean ± std of test mIoU and mDice over the seeds of each group of ``runs`` that
    share the values of ``keys`` (groups in order of first appearance), with the best
    validation mIoU of the runs (``best_val_miou``, mean ± std: what a choice between
    settings is made on) and the convergence figures (see the module): ``val_curve_area``
    (mean ± std) and, where the reference init ran with the same seeds,
    ``steps_to_target`` (mean over the seeds that reached it) and ``reached_target`` (how
    many did)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run[key] for key in keys), []).append(run)
    summary = []
    for values, chosen in groups.items():
        miou, miou_std = _mean_std([r["test_miou"] for r in chosen])
        dice, dice_std = _mean_std([r["test_mdice"] for r in chosen])
        area, area_std = _mean_std([curve_area(r["curve"]) for r in chosen])
        best, best_std = _mean_std([best_validation(r["curve"]) for r in chosen])
        row = {
            **dict(zip(keys, values, strict=True)),
            "train_images": chosen[0]["train_images"],
            "seeds": len(chosen),
            "test_miou": miou,
            "test_miou_std": miou_std,
            "test_mdice": dice,
            "test_mdice_std": dice_std,
            "val_curve_area": area,
            "val_curve_area_std": area_std,
            "best_val_miou": best,
            "best_val_miou_std": best_std,
        }
        summary.append(row | _convergence(chosen, runs, keys))
    return summary


def _same_setting(run: dict[str, Any], other: dict[str, Any], keys: Sequence[str]) -> bool:
    """Do two runs share every key but the init (and the seed)?"""
    return all(run[key] == other[key] for key in keys if key != "init")


def _convergence(
    chosen: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]], keys: Sequence[str]
) -> dict[str, Any]:
    if "init" not in keys:
        return {}
    references = {
        r["seed"]: r
        for r in runs
        if r["init"] == REFERENCE_INIT and _same_setting(r, chosen[0], keys)
    }
    paired = [r for r in chosen if r["seed"] in references and references[r["seed"]]["curve"]]
    if not paired:
        return {}
    steps = []
    for run in paired:
        best = best_validation(references[run["seed"]]["curve"])
        steps.append(first_step_reaching(run["curve"], CONVERGENCE_FRACTION * best))
    reached = [step for step in steps if step is not None]
    return {
        "steps_to_target": statistics.fmean(reached) if reached else None,
        "reached_target": len(reached),
    }


def paired_comparisons(
    runs: Sequence[dict[str, Any]], keys: Sequence[str], *, resamples: int = 2000
) -> list[dict[str, Any]]:
    """``doll`` - every other init, per group of ``keys`` (without ``init``): test mIoU's
    mean difference over the seeds both ran, with a paired t interval (``t``) and, when
    every paired run kept its test images' sums (the same images), a paired bootstrap
    interval over seeds and images (``bootstrap``; else ``None``)."""
    groups: dict[tuple[Any, ...], dict[str, dict[int, dict[str, Any]]]] = {}
    for run in runs:
        by_init = groups.setdefault(tuple(run[key] for key in keys), {})
        by_init.setdefault(run["init"], {})[run["seed"]] = run
    comparisons = []
    for values, by_init in groups.items():
        treated = by_init.get(TREATED_INIT)
        if treated is None:
            continue
        for control_init, control in by_init.items():
            seeds = sorted(set(treated) & set(control))
            if control_init == TREATED_INIT or not seeds:
                continue
            pairs = [(treated[s], control[s]) for s in seeds]
            comparisons.append(
                {
                    **dict(zip(keys, values, strict=True)),
                    "treated": TREATED_INIT,
                    "control": control_init,
                    "seeds": len(seeds),
                    "t": paired_t_interval(
                        [a["test_miou"] for a, _ in pairs], [b["test_miou"] for _, b in pairs]
                    ),
                    "bootstrap": _bootstrap(pairs, resamples),
                }
            )
    return comparisons


def _bootstrap(
    pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]], resamples: int
) -> dict[str, Any] | None:
    found = [run.get("test_per_image") for pair in pairs for run in pair]
    tables = [table for table in found if table]
    if len(tables) != len(found):
        return None
    ids = tables[0]["ids"]
    if any(table["ids"] != ids for table in tables) or not ids:
        return None

    def sums(table: dict[str, Any]) -> np.ndarray:  # [N, 2, K]
        return np.stack([np.asarray(table["intersection"]), np.asarray(table["union"])], axis=1)

    treated = np.stack([sums(a["test_per_image"]) for a, _ in pairs])
    control = np.stack([sums(b["test_per_image"]) for _, b in pairs])
    return paired_bootstrap_interval(treated, control, resamples=resamples)


def interval(result: dict[str, Any] | None, digits: int = 3) -> str:
    """``+0.012 [-0.004, +0.028]``; the mean alone without an interval, ``-`` without any."""
    if result is None:
        return "-"
    mean = f"{result['mean']:+.{digits}f}"
    if result.get("low") is None:
        return mean
    return f"{mean} [{result['low']:+.{digits}f}, {result['high']:+.{digits}f}]"


def comparison_table(
    summary: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]] = ()
) -> str:
    """Mean ± std test mIoU per init and budget, then the paired differences."""
    budgets = list(dict.fromkeys(row["budget"] for row in summary))
    inits = list(dict.fromkeys(row["init"] for row in summary))
    images = {row["budget"]: row["train_images"] for row in summary}
    header = ["init", *(f"{b} labels ({images[b]} images)" for b in budgets)]
    rows = []
    for init in inits:
        cells = [init]
        for budget in budgets:
            row = next(r for r in summary if r["init"] == init and r["budget"] == budget)
            cells.append(f"{row['test_miou']:.3f} ± {row['test_miou_std']:.3f}")
        rows.append(cells)
    lines = markdown.table_lines(header, rows)
    if comparisons:
        lines += ["", *differences_table(comparisons)]
    return "\n".join(lines) + "\n"


def differences_table(comparisons: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines: one row per comparison (its budget), mean difference of test mIoU
    with both 95% intervals."""
    header = [
        "labels",
        "difference",
        "seeds",
        "mean, 95% CI paired t over seeds",
        "95% CI paired bootstrap over seeds and test images",
    ]
    rows = [
        [
            str(row["budget"]),
            f"{row['treated']} - {row['control']}",
            str(row["seeds"]),
            interval(row["t"]),
            interval(row["bootstrap"]) if row["bootstrap"] else "no per-image sums",
        ]
        for row in comparisons
    ]
    return markdown.table_lines(header, rows)


def save_curves(runs: Sequence[dict[str, Any]], out: Path) -> None:
    """Validation mIoU against optimiser steps, mean over seeds, one panel per budget."""
    plt = pyplot()

    budgets = list(dict.fromkeys(r["budget"] for r in runs))
    inits = list(dict.fromkeys(r["init"] for r in runs))
    figure, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.4), squeeze=False)
    for axis, budget in zip(axes[0], budgets, strict=True):
        for init in inits:
            curves = [r["curve"] for r in runs if r["init"] == init and r["budget"] == budget]
            steps = [point["step"] for point in curves[0]]
            length = min(len(c) for c in curves)
            means = [statistics.fmean(c[i]["val_miou"] for c in curves) for i in range(length)]
            axis.plot(steps[:length], means, marker="o", markersize=3, label=init)
        axis.set_title(f"{budget} labelled images", fontsize=9)
        axis.set_xlabel("fine-tuning steps")
        axis.set_ylabel("validation mIoU")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    save_figure(figure, out, dpi=100)
