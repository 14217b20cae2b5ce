"""``doll labels ...``: generate, inspect and score DoLL label stores."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer

from doll_core.cli.data_cmd import given, parse_set
from doll_core.configuration import parse_config
from doll_core.labels.export import EXPORT_THRESHOLD

labels_app = typer.Typer(
    help="Generate, inspect and score DoLL label stores.", no_args_is_help=True
)


@labels_app.command("generate")
def generate(
    data: Path = typer.Option(..., "--data", help="Dataset root (CheXpert layout)."),
    classifier: list[Path] = typer.Option(..., "--classifier", help="Checkpoint (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Label store folder."),
    explainer: str | None = typer.Option(None, "--explainer", help="Default: the config's."),
    fusion: str | None = typer.Option(None, "--fusion", help="Default: the config's."),
    split: str | None = typer.Option(None, "--split", help="Default: the config's."),
    settings: list[str] = typer.Option(
        [],
        "--set",
        help="Any config key, KEY=VALUE (a TOML value), e.g. --set shard_size=512 "
        "--set 'explainer_params={n_steps = 16}'.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Complete an interrupted store."),
) -> None:
    """Explain every image with every classifier, fuse, and write a sharded label store."""
    from doll_core.labels.config import LabelGenerationConfig
    from doll_core.labels.generate import generate_labels

    values = given(
        data=data, classifiers=classifier, explainer=explainer, fusion=fusion, split=split
    )
    values.update(parse_set(settings))
    config = parse_config(LabelGenerationConfig, values, source="labels generate")
    manifest = generate_labels(config, out, resume=resume, progress=True)
    report = json.loads((out / "generation.json").read_text())
    typer.echo(
        f"wrote {out}: {len(manifest['images'])} images in "
        f"{len(manifest['shards'])} shards, {report['bytes_per_image']} bytes/image, "
        f"{report['images_per_second']} images/s"
    )


@labels_app.command("inspect")
def inspect(
    store: Path = typer.Argument(..., help="A label store folder."),
    grid: Path | None = typer.Option(None, "--grid", help="Save example labels as PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Counts per observation, coverage, skipped images, and example labels."""
    from doll_core.labels.store import LabelStore

    labels = LabelStore(store)
    counts: Counter[str] = Counter()
    coverage: dict[str, list[float]] = {}
    for entry in labels.manifest["images"].values():
        for name, stats in zip(entry["observations"], entry["stats"], strict=True):
            counts[name] += 1
            coverage.setdefault(name, []).append(stats[2])
    skipped = list(labels.skipped())
    report = {
        "images": len(labels.ids),
        "shards": len(labels.manifest["shards"]),
        "complete": labels.manifest["complete"],
        "bytes": sum(s["bytes"] for s in labels.manifest["shards"].values()),
        "maps_per_observation": dict(counts),
        "mean_coverage": {k: round(sum(v) / len(v), 4) for k, v in coverage.items()},
        "skipped": skipped,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(
            f"{report['images']} images in {report['shards']} shards "
            f"({'complete' if report['complete'] else 'INCOMPLETE'}), "
            f"{report['bytes'] / max(report['images'], 1):.0f} bytes/image"
        )
        for name, count in sorted(counts.items(), key=lambda item: -item[1]):
            typer.echo(
                f"  {name:28s} {count:6d} maps, mean coverage {report['mean_coverage'][name]:.3f}"
            )
        for item in skipped:
            typer.echo(f"warning: skipped {item['path']}: {item['reason']}", err=True)
    if grid is not None:
        from doll_core.labels.figure import save_label_grid

        typer.echo(f"wrote {save_label_grid(store, grid)}")


@labels_app.command("score")
def score(
    store: Path = typer.Argument(..., help="A label store."),
    phantom: Path | None = typer.Option(
        None, "--data", help="The phantom folder (lesion masks) the store was made from."
    ),
    ground_truth: str | None = typer.Option(
        None,
        "--ground-truth",
        help="Score against this ground truth instead of a phantom's masks: KIND:PATH, KIND "
        "chexlocalize, nih-bbox or coco. Store ids match its image ids as doll labels "
        "export matches them; maps are compared at the native size.",
    ),
    threshold: float = typer.Option(
        EXPORT_THRESHOLD, "--threshold", help="Binarisation for IoU and Dice (and mIoU)."
    ),
) -> None:
    """Localisation of the labels against the phantom's true lesion masks, or against
    ground truth (with CheXlocalize's mIoU and hit rate, per observation)."""
    from doll_core.errors import DollError
    from doll_core.labels.scoring import score_store, score_store_against

    if (phantom is None) == (ground_truth is None):
        raise DollError("labels score takes a phantom (--data) or --ground-truth, one of them")
    if ground_truth is not None:
        from doll_core.groundtruth.specs import read_ground_truth
        from doll_core.json_values import json_safe

        result = score_store_against(store, read_ground_truth(ground_truth), threshold)
        typer.echo(json.dumps(json_safe(result), indent=2))
        return
    assert phantom is not None
    typer.echo(json.dumps(score_store(store, phantom, threshold), indent=2))


@labels_app.command("export")
def export(
    store: Path = typer.Argument(..., help="A label store folder."),
    out: Path = typer.Argument(..., help="The JSON file (chexlocalize) or folder (png) to write."),
    export_format: str = typer.Option(
        "chexlocalize", "--format", help="chexlocalize (COCO RLE JSON) or png (one mask a file)."
    ),
    threshold: float = typer.Option(
        EXPORT_THRESHOLD, "--threshold", help="Foreground where the label is >= this (and > 0)."
    ),
    size_from: str | None = typer.Option(
        None,
        "--size-from",
        help="Ground truth KIND:PATH: write each image at its native size there, under its "
        "id there (what CheXlocalize's eval.py needs). Default: the store's map size.",
    ),
) -> None:
    """Write a label store as binary segmentations CheXlocalize's evaluation and COCO tools
    read (COCO RLE JSON as CheXlocalize writes it), or as PNG masks."""
    from doll_core.groundtruth.specs import read_ground_truth
    from doll_core.labels.export import export_store

    sizes = read_ground_truth(size_from) if size_from is not None else None
    report = export_store(
        store,
        out,
        export_format,  # type: ignore[arg-type]  # checked by export_store
        threshold=threshold,
        sizes=sizes,
    )
    typer.echo(f"wrote {report.out}: {report.masks} masks of {report.images} images")
    if report.left_out:
        typer.echo(
            f"warning: {len(report.left_out)} images left out, {sizes.source if sizes else ''} "
            f"does not list them (first: {report.left_out[0]})",
            err=True,
        )
