"""``doll evaluate``: a leaderboard of explainers by faithfulness, randomisation,
complexity and localization metrics, over one or more classifiers."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer

from doll_core.devices import device_option
from doll_core.errors import DollError
from doll_core.evaluation.settings import DEFAULT_METRICS, EvaluationSettings

_DEFAULTS = EvaluationSettings()


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


def evaluate_command(
    run: Path | None = typer.Argument(
        None,
        help="A run folder of doll run: its classifiers, its phantom and its explainer "
        "(each can be overridden by the options).",
    ),
    checkpoint: list[str] = typer.Option(
        [], "--checkpoint", help="Classifier checkpoint, [NAME=]PATH (repeatable)."
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="A phantom folder (its lesion masks are the ground truth); with "
        "--ground-truth, the folder of the images it annotates.",
    ),
    ground_truth: str | None = typer.Option(
        None,
        "--ground-truth",
        help="Ground truth KIND:PATH (chexlocalize, nih-bbox, coco) for the images under --data.",
    ),
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
    settings: list[str] = typer.Option(
        [],
        "--set",
        help="METRIC.KEY=VALUE (e.g. deletion.patch=4), EXPLAINER.KEY=VALUE (e.g. "
        "integrated_gradients.n_steps=16) or engine.KEY=VALUE.",
    ),
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
    from doll_core.attribution.api import create_explainer
    from doll_core.attribution.scoring import explained_note
    from doll_core.cli.explain_cmd import _explainer_params, refuse_unused_settings
    from doll_core.evaluation.engine import (
        PhantomImages,
        TruthImages,
        build_metrics,
        evaluate,
        load_classifiers,
    )
    from doll_core.evaluation.inputs import read_run
    from doll_core.evaluation.leaderboard import build_leaderboard, write_leaderboard
    from doll_core.groundtruth.specs import read_ground_truth
    from doll_core.locking import folder_lock
    from doll_core.registry import get_registry

    registry = get_registry()
    inputs = read_run(run) if run is not None else None
    classifiers = _checkpoints(checkpoint) or (inputs.classifiers if inputs else {})
    if not classifiers:
        raise DollError("no classifier to evaluate: give a run folder or --checkpoint")
    root = data or (inputs.phantom if inputs else None)
    if root is None:
        raise DollError("no images to evaluate on: give --data (or a run folder with a phantom)")
    if not root.is_dir():
        raise DollError(f"--data folder not found: {root}")
    explainer_names = explainer or ([inputs.explainer] if inputs and inputs.explainer else [])
    if explainer_names == ["all"]:
        explainer_names = registry.names("explainer")
    explainer_names = explainer_names or ["integrated_gradients"]
    metric_names = metric or list(DEFAULT_METRICS)
    if metric_names == ["all"]:
        metric_names = registry.names("metric")
    metric_params, explainer_items = _split_settings(
        settings, set(registry.names("metric")), set(registry.names("explainer"))
    )
    explainer_params, engine = _explainer_params(explainer_items)
    refuse_unused_settings(explainer_params, explainer_names, registry.names("metric"))
    base_params = inputs.params if inputs else {}
    params = {
        name: {**base_params.get(name, {}), **explainer_params.get(name, {})}
        for name in explainer_names
    }
    for name, values in params.items():  # a parameter it cannot take: exit 2 before work
        create_explainer(name, values, engine, registry=registry)
    evaluation = EvaluationSettings(
        metrics=metric_names,
        params=metric_params,
        count=count,
        split=split,
        batch_size=batch_size,
        seed=seed,
        bootstrap=bootstrap,
    )
    metrics = build_metrics(evaluation.metrics, evaluation.params, registry)
    truth = read_ground_truth(ground_truth) if ground_truth is not None else None

    def images_for(meta: Any) -> PhantomImages | TruthImages:
        grey = meta.in_channels == 1
        if truth is not None:
            return TruthImages(root, truth, size=meta.image_size, grayscale=grey, count=count)
        return PhantomImages(
            root, split=split, size=meta.image_size, grayscale=grey, count=count, registry=registry
        )

    models, images = load_classifiers(classifiers, images_for, device=device, registry=registry)

    def progress(classifier: str, name: str, done: int, total: int) -> None:
        if done == total:
            typer.echo(f"  {classifier} · {name}: done", err=True)

    evaluations = evaluate(
        models,
        images,
        params,
        metrics,
        evaluation,
        registry=registry,
        engine=engine,
        progress=progress,
    )
    board = build_leaderboard(evaluations, metrics, replicates=bootstrap, seed=seed)
    board["settings"] = evaluation.model_dump()
    board["explainer_params"] = params
    board["classifiers"] = {name: str(path) for name, path in classifiers.items()}
    board["data"] = str(root) + (f" with {ground_truth}" if ground_truth else f" ({split} split)")
    target = out or ((run / "evaluation") if run is not None else Path("evaluation"))
    done = next((e for e in evaluations if e.error is None), evaluations[0])
    note = explained_note(done.images, done.skipped)
    board["skipped"] = done.skipped
    for result in evaluations:
        outcome = "refused" if result.error else explained_note(result.images, result.skipped)
        typer.echo(f"  {result.classifier} · {result.explainer}: {outcome}", err=True)
    header = (
        f"# Explainer evaluation\n\n{len(models)} classifier(s) x {len(params)} explainer(s) "
        f"on {board['data']}, images with findings: {note}."
    )
    # RUN/evaluation: under the run's lock, which also checks the run for planted links
    with folder_lock(run) if run is not None and out is None else nullcontext():
        written = write_leaderboard(target, board, header)
    from doll_core.evaluation.leaderboard import markdown_table

    typer.echo(markdown_table(board))
    typer.echo("wrote " + ", ".join(str(p) for p in written))
