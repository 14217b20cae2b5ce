"""``doll evaluate``: a leaderboard of explainers by faithfulness, randomisation,
complexity and localization metrics, over one or more classifiers."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from doll_core.attribution.scoring import explained_note
from doll_core.devices import device_option
from doll_core.errors import DollError
from doll_core.evaluation.settings import DEFAULT_METRICS, EvaluationSettings

_DEFAULTS = EvaluationSettings()
DATA_HELP = (
    "A phantom folder (its lesion masks are the ground truth); with --ground-truth, the "
    "folder of the images it annotates."
)
GROUND_TRUTH_HELP = (
    "Ground truth KIND:PATH (chexlocalize, nih-bbox, coco) for the images under --data."
)
SET_HELP = (
    "METRIC.KEY=VALUE (e.g. deletion.patch=4), EXPLAINER.KEY=VALUE (e.g. "
    "integrated_gradients.n_steps=16) or engine.KEY=VALUE."
)


def _checkpoints(items: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` or ``PATH`` items -> name -> checkpoint (a bare path is named after
    its folder)."""
    found: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        checkpoint = Path(path if sep else item)
        label = name if sep else checkpoint.parent.name or checkpoint.stem
        if label in found:
            raise DollError(f"--checkpoint: two classifiers are named {label!r}; use NAME=PATH")
        found[label] = checkpoint
    return found


def _split_settings(
    items: list[str], metric_names: set[str], explainer_names: set[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``--set`` items -> (metric params, the other items: explainers' and the engine's)."""
    from doll_core.cli.data_cmd import parse_set

    metric_params: dict[str, dict[str, Any]] = {}
    explainer_items: list[str] = []
    for item in items:
        key = item.partition("=")[0].strip()
        name, _, parameter = key.partition(".")
        if name in metric_names and name not in explainer_names:
            if not parameter:
                raise DollError(f"--set takes METRIC.KEY=VALUE, got {item!r}")
            metric_params.setdefault(name, {})[parameter] = parse_set([item])[key]
        else:
            explainer_items.append(item)
    return metric_params, explainer_items


@dataclass
class _Request:
    """What ``doll evaluate`` was asked: classifiers, images, explainers with their
    parameters and engine options, metrics with theirs."""

    classifiers: dict[str, Path]
    root: Path
    params: dict[str, dict[str, Any]]
    engine: Any
    metrics: list[str]
    metric_params: dict[str, dict[str, Any]]


def _request(
    run: Path | None,
    checkpoint: list[str],
    data: Path | None,
    explainer: list[str],
    metric: list[str],
    settings: list[str],
    registry: Any,
) -> _Request:
    """The command's options resolved against the run folder ``run`` (its classifiers,
    phantom and explainer, each overridable), checked before any work.

    :raises DollError: no classifier, no or a missing data folder, a ``--set`` for nothing
        that is run.
    """
    from doll_core.cli.explain_cmd import _explainer_params, refuse_unused_settings
    from doll_core.evaluation.inputs import read_run

    inputs = read_run(run) if run is not None else None
    classifiers = _checkpoints(checkpoint) or (inputs.classifiers if inputs else {})
    if not classifiers:
        raise DollError("no classifier to evaluate: give a run folder or --checkpoint")
    root = data or (inputs.phantom if inputs else None)
    if root is None:
        raise DollError("no images to evaluate on: give --data (or a run folder with a phantom)")
    if not root.is_dir():
        raise DollError(f"--data folder not found: {root}")
    names = explainer or ([inputs.explainer] if inputs and inputs.explainer else [])
    names = (registry.names("explainer") if names == ["all"] else names) or ["integrated_gradients"]
    metrics = metric or list(DEFAULT_METRICS)
    metrics = registry.names("metric") if metrics == ["all"] else metrics
    metric_params, explainer_items = _split_settings(
        settings, set(registry.names("metric")), set(registry.names("explainer"))
    )
    explainer_params, engine = _explainer_params(explainer_items)
    refuse_unused_settings(explainer_params, names, registry.names("metric"))
    base = inputs.params if inputs else {}
    params = {name: {**base.get(name, {}), **explainer_params.get(name, {})} for name in names}
    return _Request(classifiers, root, params, engine, metrics, metric_params)


def _progress(classifier: str, name: str, done: int, total: int) -> None:
    if done == total:
        typer.echo(f"  {classifier} · {name}: done", err=True)


def evaluate_command(
    run: Path | None = typer.Argument(
        None,
        help="A run folder of doll run: its classifiers, its phantom and its explainer "
        "(each can be overridden by the options).",
    ),
    checkpoint: list[str] = typer.Option(
        [], "--checkpoint", help="Classifier checkpoint, [NAME=]PATH (repeatable)."
    ),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    ground_truth: str | None = typer.Option(None, "--ground-truth", help=GROUND_TRUTH_HELP),
    explainer: list[str] = typer.Option(
        [], "--explainer", help="Explainer (repeatable) or 'all'. Default: the run's, else IG."
    ),
    metric: list[str] = typer.Option(
        [],
        "--metric",
        help=f"Metric (repeatable) or 'all'. Default: {', '.join(DEFAULT_METRICS)}.",
    ),
    count: int = typer.Option(_DEFAULTS.count, "--count", min=1, help="Images with findings."),
    split: str = typer.Option(_DEFAULTS.split, "--split", help="Phantom split: train or valid."),
    batch_size: int = typer.Option(_DEFAULTS.batch_size, "--batch-size", min=1),
    seed: int = typer.Option(_DEFAULTS.seed, "--seed", help="Seed of the metrics' draws."),
    bootstrap: int = typer.Option(
        _DEFAULTS.bootstrap, "--bootstrap", min=0, help="Bootstrap replicates per interval."
    ),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
    device: str = typer.Option(
        "cpu", "--device", callback=device_option, help="Device of the classifiers and maps."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder of the leaderboard. Default: RUN/evaluation, else ./evaluation."
    ),
) -> None:
    """Rank explainers by faithfulness (deletion, insertion, ABPC, ROAD, faithfulness
    correlation), randomisation, complexity and localization, with 95% intervals, and
    write evaluation.md/.csv/.json and a rank figure."""
    from doll_core.evaluation.leaderboard import markdown_table
    from doll_core.evaluation.pipeline import images_source, run_evaluation
    from doll_core.groundtruth.specs import read_ground_truth
    from doll_core.locking import folder_lock
    from doll_core.registry import get_registry

    registry = get_registry()
    request = _request(run, checkpoint, data, explainer, metric, settings, registry)
    evaluation = EvaluationSettings(metrics=request.metrics, params=request.metric_params,
                                    count=count, split=split, batch_size=batch_size, seed=seed,
                                    bootstrap=bootstrap)  # fmt: skip
    truth = read_ground_truth(ground_truth) if ground_truth is not None else None
    where = f" with {ground_truth}" if ground_truth else f" ({split} split)"
    data_text = f"{request.root}{where}"
    sizes = f"{len(request.classifiers)} classifier(s) x {len(request.params)} explainer(s)"
    outcome = run_evaluation(
        request.classifiers, images_source(request.root, evaluation, registry, truth),
        request.params, evaluation,
        out or ((run / "evaluation") if run is not None else Path("evaluation")),
        registry=registry, device=device, engine=request.engine, progress=_progress,
        header=lambda outcome: f"# Explainer evaluation\n\n{sizes} on {data_text}, images "
        f"with findings: {outcome.explained}.",
        extra={"settings": evaluation.model_dump(), "explainer_params": request.params,
               "classifiers": {n: str(p) for n, p in request.classifiers.items()},
               "data": data_text},
        # RUN/evaluation: under the run's lock, which also checks it for planted links
        writing=(lambda: folder_lock(run)) if run is not None and out is None else nullcontext,
    )  # fmt: skip
    for result in outcome.evaluations:
        said = "refused" if result.error else explained_note(result.images, result.skipped)
        typer.echo(f"  {result.classifier} · {result.explainer}: {said}", err=True)
    typer.echo(markdown_table(outcome.board))
    typer.echo("wrote " + ", ".join(str(p) for p in outcome.written))
