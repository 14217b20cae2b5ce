"""``doll localization ...``: segmentations scored against localization ground truth."""

from __future__ import annotations

import json
import math
from typing import Any

import typer

from doll_core import markdown
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
    """A Markdown table of :func:`~doll_core.groundtruth.compare.compare_segmentations`.

    With a bootstrap, ``mIoU`` is the number CheXlocalize's ``eval.py`` writes as
    ``mean`` in its summary (the mean of its bootstrap replicates' means, the one its
    users quote), beside the plain mean of the IoUs; without one, the plain mean alone.
    """
    bootstrapped = result.get("bootstrap") is not None
    columns = ["observation", "mean IoU", "n"]
    if bootstrapped:
        columns = ["observation", "mIoU (CheXlocalize summary: bootstrap mean)", "mean IoU",
                   "n", "95% CI (bootstrap)"]  # fmt: skip
    rows = []
    for name, entry in result["per_observation"].items():
        cells = [name, _cell(entry["miou"]), str(entry["n"])]
        if bootstrapped:
            interval = entry["bootstrap"]
            shown = "—"
            if not math.isnan(interval["lower"]):
                shown = f"[{_cell(interval['lower'])}, {_cell(interval['upper'])}]"
            cells = [name, _cell(interval["mean"]), *cells[1:], shown]
        rows.append(cells)
    overall = result["overall"]
    for label, key in (("mean of observations", "miou_mean_of_observations"),
                       ("all pairs", "miou_all_pairs")):  # fmt: skip
        cells = [label, _cell(overall[key]), str(overall["n"])]
        if bootstrapped:
            cells = [label, "", *cells[1:], ""]
        rows.append(cells)
    return markdown.table(columns, rows)


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
