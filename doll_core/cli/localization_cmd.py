"""``doll localization ...``: segmentations scored against localization ground truth."""

from __future__ import annotations

import json
import math
from typing import Any

import typer

from doll_core.groundtruth.compare import BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED
from doll_core.json_values import json_safe

localization_app = typer.Typer(
    help="Score segmentations against localization ground truth (CheXlocalize, NIH, COCO).",
    no_args_is_help=True,
)

SPEC_HELP = "[KIND:]PATH; KIND is chexlocalize (the default), nih-bbox or coco."


def _cell(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def comparison_table(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`~doll_core.groundtruth.compare.compare_segmentations`."""
    lines = ["| observation | mIoU | n | 95% CI (bootstrap) |", "|---|---|---|---|"]
    for name, entry in result["per_observation"].items():
        interval = entry.get("bootstrap")
        shown = "—"
        if interval and not math.isnan(interval["lower"]):
            shown = f"[{_cell(interval['lower'])}, {_cell(interval['upper'])}]"
        lines.append(f"| {name} | {_cell(entry['miou'])} | {entry['n']} | {shown} |")
    overall = result["overall"]
    lines.append(
        f"| mean of observations | {_cell(overall['miou_mean_of_observations'])} | "
        f"{overall['n']} | |"
    )
    lines.append(f"| all pairs | {_cell(overall['miou_all_pairs'])} | {overall['n']} | |")
    return "\n".join(lines) + "\n"


@localization_app.command("compare")
def compare(
    prediction: str = typer.Argument(..., help=f"Predicted segmentations: {SPEC_HELP}"),
    truth: str = typer.Argument(..., help=f"Ground truth: {SPEC_HELP}"),
    true_pos_only: bool = typer.Option(
        True,
        "--true-pos-only/--all-images",
        help="CheXlocalize's default: IoU only where prediction and truth are both "
        "non-empty. --all-images: also where one is empty (IoU 0), and images only the "
        "prediction lists.",
    ),
    bootstrap: int = typer.Option(
        BOOTSTRAP_REPLICATES, "--bootstrap", min=0, help="Bootstrap replicates (0: none)."
    ),
    seed: int = typer.Option(BOOTSTRAP_SEED, "--seed", help="Seed of the bootstrap."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON, with every pair's IoU."),
) -> None:
    """mIoU of one segmentations file against another, per observation and overall, as
    CheXlocalize's eval.py computes it."""
    from doll_core.groundtruth.compare import compare_segmentations
    from doll_core.groundtruth.specs import read_ground_truth

    predicted = read_ground_truth(prediction, default_kind="chexlocalize")
    true = read_ground_truth(truth, default_kind="chexlocalize")
    result = compare_segmentations(
        predicted, true, true_pos_only=true_pos_only, replicates=bootstrap, seed=seed
    )
    if as_json:
        typer.echo(json.dumps(json_safe(result), indent=2))
    else:
        typer.echo(f"{result['prediction']} against {result['truth']}: {result['images']} images")
        typer.echo(comparison_table(result))
