"""The paper's comparison: fine-tune from ``random``, ``classifier`` and ``doll``
initialisation with several label budgets and seeds, and report mean ± std test mIoU
and the validation convergence curves."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from doll_core.atomic import atomic_write_text
from doll_core.configuration import parse_config
from doll_core.errors import DollError
from doll_core.plotting import pyplot, save_figure
from doll_core.segmentation.config import FinetuneConfig
from doll_core.segmentation.finetune import finetune


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


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
    folder, resumable) and summarise. ``inits`` maps a label to ``(init, init_path)``."""
    out = Path(out)
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
                if saved.is_file() and json.loads(saved.read_text()) != config.to_json_dict():
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
                    }
                )
                if progress is not None:
                    progress(f"{name}: test mIoU {result['test']['miou']:.4f}")
    summary = summarise_runs(runs, ("init", "budget"))
    report = {"runs": runs, "summary": summary}
    atomic_write_text(out / "comparison.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "comparison.md", comparison_table(summary))
    save_curves(runs, out / "curves.png")
    return report


def summarise_runs(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean ± std of test mIoU and mDice over the seeds of each group of ``runs`` that
    share the values of ``keys`` (groups in order of first appearance)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run[key] for key in keys), []).append(run)
    summary = []
    for values, chosen in groups.items():
        miou, miou_std = _mean_std([r["test_miou"] for r in chosen])
        dice, dice_std = _mean_std([r["test_mdice"] for r in chosen])
        summary.append(
            {
                **dict(zip(keys, values, strict=True)),
                "train_images": chosen[0]["train_images"],
                "seeds": len(chosen),
                "test_miou": miou,
                "test_miou_std": miou_std,
                "test_mdice": dice,
                "test_mdice_std": dice_std,
            }
        )
    return summary


def comparison_table(summary: Sequence[dict[str, Any]]) -> str:
    budgets = list(dict.fromkeys(row["budget"] for row in summary))
    inits = list(dict.fromkeys(row["init"] for row in summary))
    images = {row["budget"]: row["train_images"] for row in summary}
    header = "| init | " + " | ".join(f"{b} labels ({images[b]} images)" for b in budgets) + " |"
    lines = [header, "|" + "---|" * (len(budgets) + 1)]
    for init in inits:
        cells = []
        for budget in budgets:
            row = next(r for r in summary if r["init"] == init and r["budget"] == budget)
            cells.append(f"{row['test_miou']:.3f} ± {row['test_miou_std']:.3f}")
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
