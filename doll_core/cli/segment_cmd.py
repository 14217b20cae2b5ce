"""``doll pretrain``, ``doll finetune`` and ``doll compare-inits``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from doll_core.cli.data_cmd import given, parse_set
from doll_core.configuration import default_of, parse_config
from doll_core.experiment.sections import FinetuneSection


def pretrain_command(
    labels: Path = typer.Option(..., "--labels", help="A DoLL label store."),
    out: Path = typer.Option(..., "--out", help="Run folder."),
    head: str | None = typer.Option(
        None, "--head", help="Seg-head plugin (default: the config's)."
    ),
    encoder_from: Path | None = typer.Option(
        None, "--encoder-from", help="Classifier checkpoint for the encoder."
    ),
    settings: list[str] = typer.Option(
        [], "--set", help="Any config key, KEY=VALUE (a TOML value)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
) -> None:
    """Pre-train a whole segmentation model (encoder and decoder) on DoLL labels."""
    from doll_core.segmentation.config import PretrainConfig
    from doll_core.segmentation.pretrain import pretrain

    values = given(labels=labels, head=head, encoder_from=encoder_from)
    values.update(parse_set(settings))
    trainer = pretrain(
        parse_config(PretrainConfig, values, source="pretrain"), out, resume=resume, progress=True
    )
    typer.echo(
        f"wrote {out / 'best.pt'} (epoch {trainer.best_epoch}, val soft Dice "
        f"{trainer.best_metric:.4f})"
    )


def finetune_command(
    data: Path = typer.Option(..., "--data", help="Downstream dataset root."),
    out: Path = typer.Option(..., "--out", help="Run folder."),
    dataset: str | None = typer.Option(None, "--dataset", help="Reader (default: the config's)."),
    init: str = typer.Option("random", "--init", help="random, classifier, doll or checkpoint."),
    init_path: Path | None = typer.Option(None, "--init-path", help="Checkpoint for --init."),
    n_labeled: int | None = typer.Option(None, "--n-labeled", help="Training images used."),
    settings: list[str] = typer.Option(
        [], "--set", help="Any config key, KEY=VALUE (a TOML value)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
) -> None:
    """Fine-tune on a downstream segmentation task and report test mIoU / Dice."""
    from doll_core.segmentation.config import FinetuneConfig
    from doll_core.segmentation.finetune import finetune

    values = given(data=data, dataset=dataset, init=init, init_path=init_path, n_labeled=n_labeled)
    values.update(parse_set(settings))
    result = finetune(
        parse_config(FinetuneConfig, values, source="finetune"), out, resume=resume, progress=True
    )
    typer.echo(json.dumps(result["test"], indent=2))


def compare_command(
    data: Path = typer.Option(..., "--data", help="Downstream dataset root."),
    out: Path = typer.Option(..., "--out", help="Folder for all runs and the summary."),
    classifier: Path = typer.Option(..., "--classifier", help="Classifier checkpoint."),
    doll: Path = typer.Option(..., "--doll", help="DoLL pre-trained checkpoint."),
    dataset: str | None = typer.Option(None, "--dataset", help="Reader (default: the config's)."),
    budget: list[str] = typer.Option(
        list(map(str, default_of(FinetuneSection, "budgets"))),
        "--budget",
        help="Labelled images (default: an experiment's [finetune] budgets).",
    ),
    seeds: int = typer.Option(
        len(default_of(FinetuneSection, "seeds")),
        "--seeds",
        min=1,
        help="Seeds per setting, 0 .. N-1 (default: as many as an experiment's).",
    ),
    settings: list[str] = typer.Option(
        [], "--set", help="Fine-tuning config KEY=VALUE (a TOML value)."
    ),
) -> None:
    """Fine-tune from random, classifier and DoLL initialisation; table and curves."""
    from doll_core.segmentation.compare import compare_initialisations

    base: dict[str, Any] = given(data=str(data), dataset=dataset)
    base.update(parse_set(settings))
    budgets = [None if b == "all" else int(b) for b in budget]
    inits = {
        "random": ("random", None),
        "classifier": ("classifier", str(classifier)),
        "doll": ("doll", str(doll)),
    }
    report = compare_initialisations(
        base, inits, budgets, list(range(seeds)), out, progress=typer.echo
    )
    typer.echo((out / "comparison.md").read_text())
    del report


def convert_weights_command(
    source: Path = typer.Argument(..., help="A pickled weights file you trust."),
    target: Path = typer.Argument(..., help="Where to write the plain state dict."),
    trusted: bool = typer.Option(
        False, "--trusted", help="Confirm that you trust the file: loading it runs its code."
    ),
    origin: str | None = typer.Option(
        None,
        "--from",
        help="torchxrayvision: check that the result loads as the xrv_densenet backbone.",
    ),
) -> None:
    """Convert a trusted pickled weights file into a plain state dict DoLL loads safely."""
    from doll_core.convert import convert_trusted_weights
    from doll_core.errors import DollError

    if not trusted:
        raise DollError(
            "loading a pickled file runs code from it; pass --trusted if you trust its source"
        )
    if origin not in (None, "torchxrayvision"):
        raise DollError(f"--from takes torchxrayvision, got {origin!r}")
    report = convert_trusted_weights(source, target)
    dropped = f"; dropped {', '.join(report['dropped'])}" if report["dropped"] else ""
    if origin == "torchxrayvision":  # the file must build the backbone it is for
        from doll_core.observations import NUM_OBSERVATIONS
        from doll_core.registry import get_registry

        try:
            backbone = get_registry().create("backbone", "xrv_densenet", weights=target)
            backbone.build(num_classes=NUM_OBSERVATIONS, in_channels=1)
        except DollError as exc:
            target.unlink()
            raise DollError(f"{source} is not torchxrayvision's DenseNet-121: {exc}") from None
        dropped += "; loads as backbone xrv_densenet"
    typer.echo(f"wrote {target}: {report['tensors']} tensors{dropped}")
