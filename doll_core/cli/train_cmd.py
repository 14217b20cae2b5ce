"""``doll train-classifier``: train one classifier into a run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from doll_core.cli.data_cmd import given, parse_set
from doll_core.configuration import default_of, parse_config
from doll_core.devices import device_option
from doll_core.training.config import ClassifierTrainingConfig


def _D(name: str) -> object:
    """The training config's default of ``name``: the CLI restates none."""
    return default_of(ClassifierTrainingConfig, name)


def train_classifier_command(
    data: Path = typer.Option(..., "--data", help="Dataset root (e.g. a phantom or CheXpert)."),
    backbone: str | None = typer.Option(
        None, "--backbone", help="Backbone plugin name (default: the config's)."
    ),
    out: Path = typer.Option(..., "--out", help="Run folder to create (or resume)."),
    epochs: int = typer.Option(_D("epochs"), "--epochs", help="Epochs at most."),
    batch_size: int = typer.Option(
        _D("batch_size"), "--batch-size", help="Images per step and process."
    ),
    lr: float = typer.Option(_D("lr"), "--lr", help="Peak learning rate (AdamW)."),
    image_size: int = typer.Option(_D("image_size"), "--size", help="Image side in pixels."),
    workers: int = typer.Option(
        _D("num_workers"), "--workers", help="DataLoader worker processes."
    ),
    device: str = typer.Option(
        _D("device"), "--device", callback=device_option, help="auto, cpu, cuda, cuda:N or mps."
    ),
    amp: str = typer.Option(_D("amp"), "--amp", help="auto, off, bf16 or fp16 (CUDA only)."),
    seed: int = typer.Option(_D("seed"), "--seed", help="Random seed."),
    settings: list[str] = typer.Option(
        [],
        "--set",
        help="Any other config key, KEY=VALUE (a TOML value), e.g. --set weight_decay=0.05.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
) -> None:
    """Train a multi-label chest X-ray classifier (14 CheXpert observations); with
    ``--set train=false``, package a given one (a torchxrayvision model) as a checkpoint,
    validated for its AUROC, without training it."""
    from doll_core.training.classifier import package_classifier, train_classifier

    values = {
        "data": data,
        **given(backbone=backbone),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "image_size": image_size,
        "num_workers": workers,
        "device": device,
        "amp": amp,
        "seed": seed,
    }
    values.update(parse_set(settings))
    config = parse_config(ClassifierTrainingConfig, values, source="train-classifier")
    if config.train:
        result = train_classifier(config, out, resume=resume, progress=True)
    else:
        result = package_classifier(config, out)
    last = result.history[-1] if result.history else {}
    typer.echo(
        json.dumps(
            {
                "out": str(out),
                "best_epoch": result.best_epoch,
                "best_mean_auroc": None
                if math.isnan(result.best_mean_auroc)
                else result.best_mean_auroc,
                "stopped_early": result.stopped_early,
                "epochs_run": len(result.history),
                "last_train_images_per_second": last.get("train_images_per_second"),
            },
            indent=2,
        )
    )
