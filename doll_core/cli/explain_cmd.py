"""``doll explain`` (a picture of the maps of one image) and ``doll explain-scores``
(localisation scores of explainers on a phantom, or on ground truth)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from doll_core.atomic import atomic_write_text
from doll_core.attribution.api import (
    DEFAULT_EXPLAINER,
    create_explainer,
    engine_options,
    split_engine_options,
)
from doll_core.attribution.engine import EngineOptions
from doll_core.cli.data_cmd import parse_set
from doll_core.errors import DollError
from doll_core.json_values import strict_json
from doll_core.observations import OBSERVATIONS
from doll_core.registry import get_registry


def _explainer_names(values: list[str]) -> list[str]:
    names = get_registry().names("explainer")
    if not values:
        return [DEFAULT_EXPLAINER]
    if values == ["all"]:
        return names
    return values


def _target_indices(
    values: list[str], probabilities: torch.Tensor, unavailable: tuple[str, ...] = ()
) -> list[int]:
    """The observations to explain: ``values`` by name or index, or (none given) the
    predicted ones, else the three most likely; never one the model has no output for."""
    have = [i for i in range(1, len(OBSERVATIONS)) if OBSERVATIONS[i] not in unavailable]
    if not values:  # the predicted observations, or the three most likely
        chosen = [i for i in have if probabilities[i] >= 0.5]
        ranked = sorted(have, key=lambda i: -float(probabilities[i]))
        return chosen or ranked[:3]
    indices = []
    lower = {name.lower(): i for i, name in enumerate(OBSERVATIONS)}
    for value in values:
        key = value.replace("_", " ").lower()
        if value.isdigit() and int(value) < len(OBSERVATIONS):
            indices.append(int(value))
        elif key in lower:
            indices.append(lower[key])
        else:
            raise DollError(
                f"unknown target {value!r}; observations are: {', '.join(OBSERVATIONS)}"
            )
    lacking = [OBSERVATIONS[i] for i in indices if OBSERVATIONS[i] in unavailable]
    if lacking:
        raise DollError(f"the classifier has no output for {lacking}: it cannot be explained there")
    return indices


def _explainer_params(settings: list[str]) -> tuple[dict[str, dict[str, Any]], EngineOptions]:
    """``--set NAME.KEY=VALUE`` items -> ``({explainer: {key: value}}, engine options)``;
    ``--set engine.KEY=VALUE`` sets an engine option (rows per pass, autocast, ...)."""
    params: dict[str, dict[str, Any]] = {}
    engine: dict[str, Any] = {}
    for key, value in parse_set(settings).items():
        name, _, parameter = key.partition(".")
        if not parameter:
            raise DollError(f"--set takes EXPLAINER.KEY=VALUE or engine.KEY=VALUE, got {key!r}")
        if name == "engine":
            engine[parameter] = value
        else:
            params.setdefault(name, {})[parameter] = value
    for name, table in params.items():
        where, new_place = f"--set {name}.KEY", "--set engine.KEY=VALUE"
        params[name], moved = split_engine_options(table, where, new_place)
        engine = {**moved, **engine}
    return params, engine_options(engine, "--set engine")


def refuse_unused_settings(
    params: dict[str, dict[str, Any]], chosen: Sequence[str], others: Sequence[str] = ()
) -> None:
    """Refuse ``--set NAME.KEY`` for a ``NAME`` that is not among the ``chosen``
    explainers (``others``: further names a ``--set`` may take, such as metrics, offered
    as close matches): a typo or a forgotten ``--explainer`` would be silently ignored.

    :raises DollError: naming the key, and the name meant where one is close.
    """
    explainers = get_registry().names("explainer")
    for name in params:
        if name in chosen:
            continue
        key = f"--set {name}.{next(iter(params[name]), 'KEY')}"
        if name in explainers:
            raise DollError(
                f"{key}: {name} is not among the explainers run ({', '.join(chosen)}); "
                f"add --explainer {name}, or drop the setting"
            )
        close = difflib.get_close_matches(name, [*chosen, *explainers, *others, "engine"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DollError(
            f"{key}: no explainer{', metric' if others else ''} or 'engine' is called "
            f"{name!r}{hint}"
        )


def explain_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A classifier checkpoint (best.pt)."),
    image: Path = typer.Option(..., "--image", help="The radiograph to explain."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    explainer: list[str] = typer.Option(
        [],
        "--explainer",
        help=f"Explainer plugin (repeatable), or 'all'. Default: {DEFAULT_EXPLAINER}.",
    ),
    targets: list[str] = typer.Option(
        [],
        "--targets",
        help="Observations to explain (names or indices; repeatable). "
        "Default: those predicted with p >= 0.5, else the three most likely.",
    ),
    mask: list[str] = typer.Option(
        [], "--mask", help="Ground truth OBSERVATION=PNG to outline (repeatable)."
    ),
    settings: list[str] = typer.Option(
        [],
        "--set",
        help="Explainer parameter NAME.KEY=VALUE, e.g. integrated_gradients.n_steps=64, "
        "or engine option engine.KEY=VALUE, e.g. engine.max_rows=32.",
    ),
) -> None:
    """Explain one image with one or more explainers and save the maps as a picture."""
    from doll_core.attribution.api import explain
    from doll_core.attribution.figure import save_explanation_figure
    from doll_core.attribution.postprocess import PostprocessConfig, postprocess
    from doll_core.checkpoint import load_classifier
    from doll_core.data.imageio import read_image, read_mask, resize_image, resize_mask

    model, meta = load_classifier(checkpoint)
    pixels = torch.from_numpy(read_image(image, grayscale=meta.in_channels == 1))
    pixels = resize_image(pixels, (meta.image_size, meta.image_size))
    with torch.no_grad():
        probabilities = torch.sigmoid(model(pixels[None]))[0]
    indices = _target_indices(targets, probabilities, meta.unavailable)
    target_tensor = torch.tensor([indices], dtype=torch.long)
    params, engine = _explainer_params(settings)
    refuse_unused_settings(params, _explainer_names(explainer))
    truth: dict[int, np.ndarray] = {}
    for item in mask:
        observation, sep, path = item.partition("=")
        if not sep:
            raise DollError(f"--mask takes OBSERVATION=PNG, got {item!r}")
        (index,) = _target_indices([observation], probabilities, meta.unavailable)
        loaded = torch.from_numpy(read_mask(path).astype(np.float32))[None]
        truth[index] = resize_mask(loaded, (meta.image_size, meta.image_size))[0].numpy() > 0.5
    soft_maps = {}
    for name in _explainer_names(explainer):
        raw = explain(
            model, pixels[None], target_tensor, name, engine=engine, **params.get(name, {})
        )
        soft_maps[name] = postprocess(
            raw, PostprocessConfig(binarize="none"), targets=target_tensor
        ).soft[0]
    written = save_explanation_figure(
        pixels,
        soft_maps,
        indices,
        probabilities,
        out,
        masks=truth,
        title=f"{image.name} · {meta.backbone}",
    )
    typer.echo(f"wrote {written}")


def explain_scores_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A classifier checkpoint (best.pt)."),
    data: Path = typer.Option(
        ...,
        "--data",
        help="A phantom folder (with lesion masks); with --ground-truth, the folder of its "
        "images (searched recursively, matched to its image ids).",
    ),
    ground_truth: str | None = typer.Option(
        None,
        "--ground-truth",
        help="Score against this ground truth at the images' native size: KIND:PATH, KIND "
        "chexlocalize, nih-bbox or coco. Adds CheXlocalize's mIoU and hit rate.",
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        min=0.0,
        max=1.0,
        help="With --ground-truth: CheXlocalize's segmentation of a map normalised to [0, 1] "
        "at this fixed threshold (> it). Default: Otsu's threshold, as CheXlocalize.",
    ),
    explainer: list[str] = typer.Option([], "--explainer", help="Explainer (repeatable) or 'all'."),
    count: int = typer.Option(200, "--count", min=1, help="Images with findings to score."),
    split: str = typer.Option("valid", "--split", help="train or valid (phantom only)."),
    out: Path | None = typer.Option(None, "--out", help="Write the Markdown table here."),
    settings: list[str] = typer.Option(
        [],
        "--set",
        help="Explainer parameter NAME.KEY=VALUE, e.g. occlusion.window=16, or engine "
        "option engine.KEY=VALUE.",
    ),
) -> None:
    """Score explainers' localisation on a phantom's ground-truth lesion masks, or on
    radiologists' ground truth (CheXlocalize, NIH boxes, COCO), per observation."""
    from doll_core.attribution.scoring import (
        explained_note,
        per_observation_table,
        score_explainers,
        scores_table,
    )
    from doll_core.checkpoint import load_classifier
    from doll_core.groundtruth.specs import read_ground_truth

    if threshold is not None and ground_truth is None:
        raise DollError("--threshold sets CheXlocalize's segmentation: it needs --ground-truth")
    truth = read_ground_truth(ground_truth) if ground_truth is not None else None
    model, meta = load_classifier(checkpoint)
    params, engine = _explainer_params(settings)
    names = _explainer_names(explainer or ["all"])
    refuse_unused_settings(params, names)
    for name in names:  # a parameter it cannot take: exit 2 before work
        create_explainer(name, params.get(name, {}), engine)
    results = score_explainers(
        model,
        data,
        names,
        image_size=meta.image_size,
        in_channels=meta.in_channels,
        split=split,
        count=count,
        explainer_params=params,
        engine=engine,
        ground_truth=truth,
        threshold=threshold,
    )
    table = scores_table(results)
    if truth is not None:
        table += "\n" + per_observation_table(results)
    typer.echo(table)
    for result in results:
        if result.error is None:
            typer.echo(f"{result.explainer}: {explained_note(result.images, result.skipped)}")
    if out is not None:
        atomic_write_text(out, table)
        atomic_write_text(out.with_suffix(".json"), strict_json([vars(r) for r in results]))
