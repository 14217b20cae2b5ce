"""The report of a run: ``results.csv``, ``results.md``, figures, and a rich table.

``results.json`` (written by the runner) is the source; ``doll report RUN_DIR`` rebuilds
everything else from it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from doll_core import markdown
from doll_core.atomic import atomic_write_text
from doll_core.errors import DollError
from doll_core.experiment.results_file import read_results
from doll_core.experiment.sections import ReportSection
from doll_core.markdown import score_title
from doll_core.plotting import pyplot, save_figure
from doll_core.segmentation.compare import (
    CONVERGENCE_FRACTION,
    REFERENCE_INIT,
    differences_table,
    interval,
    save_curves,
)

#: overlay images when a recorded experiment does not say (one written before 0.2)
OVERLAY_IMAGES = ReportSection.model_fields["overlay_images"].default

FIGURES = "figures"
LOCALIZATION_ORDER = (
    "pointing_game",
    "iou",
    "dice",
    "top_k_intersection",
    "relevance_mass_accuracy",
    "pixel_auroc",
)


def mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, init, budget): test mIoU and mDice, mean and std over seeds
    (std ``None`` for a single seed)."""
    return [
        {
            "task": row["task"],
            "init": row["init"],
            "budget": row["budget"],
            "train_images": row["train_images"],
            "seeds": row["seeds"],
            "miou": row["test_miou"],
            "miou_std": row["test_miou_std"] if row["seeds"] > 1 else None,
            "dice": row["test_mdice"],
            "dice_std": row["test_mdice_std"] if row["seeds"] > 1 else None,
            "val_curve_area": row.get("val_curve_area"),
            "val_curve_area_std": row.get("val_curve_area_std") if row["seeds"] > 1 else None,
            "steps_to_target": row.get("steps_to_target"),
            "reached_target": row.get("reached_target"),
        }
        for row in results["finetune"]["summary"]
    ]


#: the convergence column's heading
TARGET = f"step to {CONVERGENCE_FRACTION:.0%} of {REFERENCE_INIT}'s best (seeds reaching)"


def steps_cell(row: Mapping[str, Any]) -> str:
    """``120 (3/3)``: mean step at which the seeds reached the target, and how many did."""
    if row.get("reached_target") is None:
        return "-"
    mean = row.get("steps_to_target")
    shown = "never" if mean is None else f"{mean:.0f}"
    return f"{shown} ({row['reached_target']}/{row['seeds']})"


def comparisons_of(results: Mapping[str, Any], task: str) -> list[dict[str, Any]]:
    """The paired comparisons of ``task`` in a run's results (none in one before 0.2)."""
    return [c for c in results["finetune"].get("comparisons", []) if c["task"] == task]


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def classifiers_line(results: Mapping[str, Any]) -> str | None:
    """The classifiers' mean validation AUROC at their best epoch, naming the one whose
    encoder starts the ``classifier`` and ``doll`` inits; ``None`` for a run without."""
    cells = []
    for name, info in (results.get("classifiers") or {}).items():
        if info.get("mean_auroc") is None:
            continue
        role = "; encoder of the classifier and doll inits"
        role = role if name == results.get("init_classifier") else ""
        cells.append(f"{name} {info['mean_auroc']:.3f} (epoch {info.get('best_epoch')}{role})")
    if not cells:
        return None
    return "classifiers, mean validation AUROC at the best epoch: " + "; ".join(cells)


def splits_lines(results: Mapping[str, Any]) -> list[str]:
    """Per task, the split the fine-tuning runs used: how it was made, and images (and
    patients, where known) in train / valid / test; ``[]`` for a run recorded without."""
    lines = []
    for task, split in (results.get("splits") or {}).items():
        images, patients = split.get("images") or {}, split.get("patients")
        cells = []
        for name in ("train", "valid", "test"):
            cell = f"{name} {images.get(name, 0)}"
            if patients:
                cell += f" ({patients.get(name, 0)} patients)"
            cells.append(cell)
        left_out = f"; {split['left_out']} left out" if split.get("left_out") else ""
        lines.append(f"split of {task}: {', '.join(cells)} images, {split.get('how')}{left_out}")
    return lines


def evaluation_lines(evaluation: Mapping[str, Any] | None) -> list[str]:
    """The ``[evaluation]`` section of a run's report: each metric of the explainer, per
    classifier, mean [95% CI] (the stage folder holds the whole leaderboard)."""
    if not evaluation or not evaluation.get("rows"):
        return []
    metrics = evaluation["metrics"]
    header = [score_title(name, m["higher_is_better"]) for name, m in metrics.items()]
    rows = []
    for row in evaluation["rows"]:
        cells = [row["classifier"], row["explainer"]]
        for name in metrics:
            cell = row["scores"].get(name) or {}
            mean, low, high = (cell.get(k) for k in ("mean", "low", "high"))
            text = "-" if mean is None or mean != mean else f"{mean:.3f}"
            if low is not None and high is not None and low == low:
                text += f" [{low:.3f}, {high:.3f}]"
            cells.append(text)
        rows.append(cells)
    return [
        "## Explanation quality",
        "",
        f"Cells: mean [{evaluation['interval']}].",
        "",
        *markdown.table_lines(["classifier", "explainer", *header], rows),
        "",
    ]


def results_markdown(results: Mapping[str, Any]) -> str:
    """Tables of a run: the classifiers' AUROC, downstream scores per task, label
    quality, stage times."""
    lines = [f"# {results['experiment']}", ""]
    classifiers = classifiers_line(results)
    if classifiers:
        lines += [classifiers[0].upper() + classifiers[1:] + ".", ""]
    splits = splits_lines(results)
    if splits:
        lines += [f"- {line[0].upper()}{line[1:]}" for line in splits] + [""]
    lines += task_lines(results)
    lines += labels_lines(results.get("labels"))
    lines += evaluation_lines(results.get("evaluation"))
    lines += stages_lines(results)
    environment = results.get("environment", {})
    lines += [
        "",
        f"Device: {environment.get('device')} "
        f"({environment.get('gpu', 'CPU, ' + str(environment.get('cpu_threads')) + ' threads')}); "
        f"doll {environment.get('doll')}, torch {environment.get('torch')}; "
        f"run took {results.get('seconds')} s.",
        "",
    ]
    return "\n".join(lines)


def summary_cells(row: Mapping[str, Any]) -> list[str]:
    """A :func:`summary_rows` row's cells after its task: init, labelled images, seeds,
    mIoU, Dice, validation curve area (each mean ± std) and steps to the target."""
    return [
        str(row["init"]),
        f"{row['budget']} ({row['train_images']})",
        str(row["seeds"]),
        mean_std(row["miou"], row["miou_std"]),
        mean_std(row["dice"], row["dice_std"]),
        mean_std(row["val_curve_area"], row["val_curve_area_std"]),
        steps_cell(row),
    ]


def task_lines(results: Mapping[str, Any]) -> list[str]:
    """A section per fine-tuning task: its scores per init and budget, then the paired
    differences."""
    header = ["init", "labelled images", "seeds", "mIoU", "Dice", "validation curve area"]
    lines: list[str] = []
    rows = summary_rows(results)
    for task in dict.fromkeys(row["task"] for row in rows):
        cells = [summary_cells(row) for row in rows if row["task"] == task]
        lines += [f"## {task}: test mIoU / Dice (mean ± std over seeds)", ""]
        lines += markdown.table_lines([*header, TARGET], cells)
        comparisons = comparisons_of(results, task)
        if comparisons:
            lines += ["", f"Paired differences of test mIoU ({task}):", ""]
            lines += differences_table(comparisons)
        lines.append("")
    return lines


def labels_lines(labels: Mapping[str, Any] | None) -> list[str]:
    """The labels' section: their size and speed, and their localization on the phantom."""
    if not labels:
        return []
    lines = [
        "## Labels",
        "",
        f"- images: {labels.get('images')}",
        f"- images/s: {labels.get('images_per_second')}",
        f"- bytes per image: {labels.get('bytes_per_image')}",
    ]
    localization = labels.get("localization")
    if localization and localization.get("maps"):
        spread = localization.get("std", {})
        values = [
            [name, mean_std(localization[name], spread.get(name))]
            for name in LOCALIZATION_ORDER
            if name in localization
        ]
        lines += [
            "",
            f"Localization against the phantom's lesion masks "
            f"({localization['maps']} maps, mean ± std over maps):",
            "",
            *markdown.table_lines(["metric", "value"], values),
        ]
    return [*lines, ""]


def stages_lines(results: Mapping[str, Any]) -> list[str]:
    """How many stage folders of each kind the run used, computed now, and their time."""
    kinds: dict[str, list[Mapping[str, Any]]] = {}
    for record in results["stages"]:
        kinds.setdefault(record["kind"], []).append(record)
    rows = [
        [
            kind,
            str(len(records)),
            str(sum(not r["reused"] for r in records)),
            f"{sum(r['seconds'] for r in records):.1f}",
        ]
        for kind, records in kinds.items()
    ]
    return [
        "## Stages",
        "",
        *markdown.table_lines(["stage", "folders", "computed now", "seconds"], rows),
    ]


def rich_table(results: Mapping[str, Any]) -> Any:
    """The downstream scores and convergence, the classifiers' AUROC, and the paired
    differences, as one :class:`rich.console.Group`."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"{results['experiment']}: test scores (mean ± std over seeds)",
        caption=f"val area: the validation mIoU curve's mean height; to target: {TARGET}",
    )
    for column in ("task", "init", "labelled", "seeds", "mIoU", "Dice", "val area", "to target"):
        table.add_column(column, justify="left" if column in ("task", "init") else "right")
    rows = summary_rows(results)
    for row in rows:
        table.add_row(row["task"], *summary_cells(row))
    differences = Table(title="paired differences of test mIoU, 95% CIs")
    for column in ("task", "labelled", "difference", "seeds", "paired t", "bootstrap"):
        differences.add_column(column, justify="left" if column == "task" else "right")
    for task in dict.fromkeys(row["task"] for row in rows):
        for row in comparisons_of(results, task):
            differences.add_row(
                task,
                str(row["budget"]),
                f"{row['treated']} - {row['control']}",
                str(row["seeds"]),
                interval(row["t"]),
                interval(row["bootstrap"]),
            )
    parts: list[Any] = [table]
    classifiers = classifiers_line(results)
    if classifiers is not None:
        parts.append(Text(classifiers, style="dim"))
    parts += [Text(line, style="dim") for line in splits_lines(results)]
    if differences.row_count:
        parts.append(differences)
    return Group(*parts)


def save_localization_chart(scores: Mapping[str, Mapping[str, Any]], out: Path) -> Path:
    """Bars of each labelling's localization metrics (mean, with std over maps as error
    bars); ``scores`` maps a title (an explainer, a grid point) to ``score_store`` output."""
    plt = pyplot()

    titles = [t for t, s in scores.items() if s and s.get("maps")]
    metrics = [m for m in LOCALIZATION_ORDER if any(m in scores[t] for t in titles)]
    figure, axis = plt.subplots(figsize=(1.4 + 1.3 * len(metrics), 3.4))
    width = 0.8 / max(len(titles), 1)
    for i, title in enumerate(titles):
        means = [scores[title].get(m, math.nan) for m in metrics]
        stds = [scores[title].get("std", {}).get(m, 0.0) for m in metrics]
        positions = [j + (i - (len(titles) - 1) / 2) * width for j in range(len(metrics))]
        axis.bar(positions, means, width, yerr=stds, capsize=2, label=title)
    axis.set_xticks(range(len(metrics)), [m.replace("_", "\n") for m in metrics], fontsize=7)
    axis.set_ylabel("score (mean ± std over maps)")
    axis.set_ylim(0, 1.05)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7)
    return save_figure(figure, out, dpi=100)


def save_overlay_grid(
    stores: Mapping[str, str | Path],
    out: Path,
    count: int = 6,
    phantom: str | Path | None = None,
    image_size: int = 128,
) -> Path | None:
    """Rows of images; columns: the image, its ground-truth lesion (phantom only) and
    each store's label for the image's first labelled observation."""
    plt = pyplot()
    import numpy as np

    from doll_core.data.imageio import read_mask
    from doll_core.data.samples import SkippedSample
    from doll_core.labels.dataset import LabeledImages
    from doll_core.labels.store import LabelStore
    from doll_core.observations import OBSERVATIONS
    from doll_core.phantom.layout import lesion_mask_path

    titles = list(stores)
    if not titles or count == 0:
        return None
    first = LabeledImages(stores[titles[0]], size=image_size)
    others = {t: LabelStore(stores[t]) for t in titles}
    picks = []
    for index in range(len(first)):
        sample = first[index]
        if isinstance(sample, SkippedSample):
            continue
        observations, _ = others[titles[0]].labels(sample["id"])
        if observations:
            picks.append((sample, observations[0]))
        if len(picks) >= count:
            break
    if not picks:
        return None
    columns = 1 + (phantom is not None) + len(titles)
    figure, axes = plt.subplots(
        len(picks), columns, figsize=(2.1 * columns, 2.2 * len(picks)), squeeze=False
    )
    for row, (sample, k) in zip(axes, picks, strict=True):
        image = sample["image"].mean(0).numpy()
        for axis in row:
            axis.axis("off")
            axis.imshow(image, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(OBSERVATIONS[k], fontsize=7)
        column = 1
        if phantom is not None:
            path = lesion_mask_path(phantom, sample["id"], OBSERVATIONS[k])
            if path.is_file():
                mask = read_mask(path).astype(np.float32)
                row[1].imshow(
                    np.ma.masked_less_equal(mask, 0),
                    cmap="autumn",
                    alpha=0.6,
                    vmin=0,
                    vmax=1,
                    extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5),
                )
            row[1].set_title("truth" if path.is_file() else "truth: no visible finding", fontsize=7)
            column = 2
        for offset, title in enumerate(titles):
            observations, maps = others[title].labels(sample["id"])
            axis = row[column + offset]
            if k in observations:
                label = maps[observations.index(k)].float().numpy() / 255
                axis.imshow(
                    label,
                    cmap="inferno",
                    alpha=0.55,
                    vmin=0,
                    vmax=1,
                    extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5),
                )
            axis.set_title(title, fontsize=7)
    return save_figure(figure, out, dpi=90)


def write_figures(out: Path, results: Mapping[str, Any], document: Mapping[str, Any]) -> list[Path]:
    figures = out / FIGURES
    written: list[Path] = []
    runs = results["finetune"]["runs"]
    for task in dict.fromkeys(run["task"] for run in runs):
        path = figures / f"curves-{task}.png"
        save_curves([r for r in runs if r["task"] == task], path)
        written.append(path)
    labels = results.get("labels")
    stages: dict[str, Any] = (labels or {}).get("explain") or {}
    made_by = next((stage.get("explainer") for stage in stages.values()), None)
    title = str(document.get("explanation", {}).get("explainer") or made_by or "labels")
    if labels and labels.get("localization", {}).get("maps"):
        written.append(
            save_localization_chart({title: labels["localization"]}, figures / "localization.png")
        )
    store = results.get("labels_folder")
    count = document.get("report", {}).get("overlay_images", OVERLAY_IMAGES)
    if store and Path(store).is_dir() and count:
        # the phantom's lesion masks are the truth only of labels made on its images
        classification = document.get("data", {}).get("classification") or {}
        truth = results.get("phantom") if not classification.get("root") else None
        overlay = save_overlay_grid({title: store}, figures / "labels-overlay.png", count, truth)
        if overlay is not None:
            written.append(overlay)
    return written


def write_report(out: Path, results: Mapping[str, Any], document: Mapping[str, Any]) -> list[Path]:
    """``results.csv``, ``results.md`` and the figures of a run folder."""
    atomic_write_text(out / "results.csv", results_csv(summary_rows(results)))
    atomic_write_text(out / "results.md", results_markdown(results))
    return [out / "results.csv", out / "results.md", *write_figures(out, results, document)]


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(results, experiment document)`` of a finished run folder."""
    run_dir = Path(run_dir)
    results = read_results(run_dir)
    try:
        document = json.loads((run_dir / "experiment.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DollError(f"{run_dir}: unreadable run files: {exc}") from None
    return results, document
