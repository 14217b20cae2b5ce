"""Choose, on validation data only, how the quick start's classifiers are trained on the
real radiographs of ``data/real-cxr``, so that their explanations follow disease rather
than source.

The real classes are confounded by source: every COVID-19 image is an adult from Hannover
(or a journal figure), every other image a child from one hospital in Guangzhou. A
classifier trained on all sources can separate "Pneumonia" from "No Finding" by age,
detector or file format alone. This script trains each candidate recipe (same seed, same
settings but the rows it reads) and scores it on validation images only:

- ``val AUROC``: mean validation AUROC on the recipe's own validation split (what the run
  reports; for the pooled recipe it is inflated by the source);
- ``Kermany AUROC``: Pneumonia against No Finding on the Kermany validation images only
  (disease within one source, the same images for every recipe);
- ``lung mass``: on the 9 validation radiographs of ``lungs/`` (adults with COVID-19, lung
  masks drawn by V7 Labs; none of them used in training), the share of Integrated
  Gradients' positive attribution for Pneumonia that falls inside the lungs, and
  ``lung share`` the lungs' share of the pixels (what a map blind to anatomy scores);
- ``pointing``: the share of those images whose attribution maximum lies in the lungs.

Run: ``python scripts/real_classifier_recipe.py --out docs/real-classifier-recipe.md``
(about a minute on 2 cores). The test split is never read.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

import doll_core
from doll_core.checkpoint import load_classifier
from doll_core.configuration import parse_config
from doll_core.data.decoded import read_levels
from doll_core.data.imageio import read_mask
from doll_core.metrics.classification import auroc
from doll_core.metrics.paired import paired_t_interval
from doll_core.observations import OBSERVATIONS
from doll_core.registry import get_registry
from doll_core.training.classifier import train_classifier
from doll_core.training.config import ClassifierTrainingConfig

ROOT = Path(__file__).resolve().parent.parent / "data" / "real-cxr"
FINDINGS = {
    "No Finding": "No Finding",
    "Pneumonia/Bacterial": "Pneumonia",
    "Pneumonia/Viral": "Pneumonia",
    "Pneumonia/Viral/COVID-19": "Pneumonia",
}
BASE_OPTIONS: dict[str, Any] = {
    "images": "images",
    "patient_column": "patient",
    "split_column": "split",
    "finding_column": "finding",
    "findings": FINDINGS,
}
#: the candidate recipes: reader options on top of BASE_OPTIONS
RECIPES: dict[str, dict[str, Any]] = {
    "all sources": {},
    "Kermany only": {"where": {"source": "kermany"}},
}
TRAINING: dict[str, Any] = {
    "backbone": "resnet18",
    "image_size": 64,
    "epochs": 10,
    "batch_size": 32,
    "lr": 0.002,
    "num_workers": 0,
    "early_stopping_patience": 10,
    "seed": 0,
}
PNEUMONIA = OBSERVATIONS.index("Pneumonia")


def kermany_auroc(checkpoint: Path) -> float:
    """Pneumonia vs No Finding AUROC on the Kermany validation images."""
    model, meta = load_classifier(checkpoint)
    dataset = get_registry().create(
        "dataset", "csv", root=ROOT / "classification", split="valid",
        size=meta.image_size, where={"source": "kermany"}, **BASE_OPTIONS,
    )  # fmt: skip
    scores, truth = [], []
    with torch.no_grad():
        for index in range(len(dataset)):
            sample = dataset[index]
            logits = model(sample["image"][None])[0]
            scores.append(float(logits[PNEUMONIA]))
            truth.append(float(sample["labels"][PNEUMONIA]))
    return float(auroc(torch.tensor(scores), torch.tensor(truth)))


def lung_scores(checkpoint: Path) -> dict[str, float]:
    """IG (blurred baseline, 16 steps) for Pneumonia on the lungs' validation images:
    mean share of positive attribution inside the lungs, the lungs' pixel share, and the
    pointing game."""
    model, meta = load_classifier(checkpoint)
    size = (meta.image_size, meta.image_size)
    with (ROOT / "lungs" / "splits.csv").open() as handle:
        stems = [row["image"] for row in csv.DictReader(handle) if row["split"] == "valid"]
    mass, share, hits = [], [], []
    for stem in stems:
        (path,) = (ROOT / "lungs" / "images").glob(f"{stem}.*")
        image, _ = read_levels(path, grayscale=True, size=size)
        lungs = torch.from_numpy(read_mask(ROOT / "lungs" / "masks" / "lungs" / f"{stem}.png"))
        lungs = functional.interpolate(lungs[None, None].float(), size=size, mode="nearest")[0, 0]
        lungs = lungs > 0
        maps = doll_core.explain(
            model, image[None], torch.tensor([[PNEUMONIA]]), "integrated_gradients",
            n_steps=16, baseline="blurred",
        )[0, 0]  # fmt: skip
        positive = maps.clamp(min=0)
        mass.append(float(positive[lungs].sum() / positive.sum().clamp(min=1e-12)))
        share.append(float(lungs.float().mean()))
        hits.append(float(lungs.flatten()[int(maps.flatten().argmax())]))
    return {
        "per_image_mass": mass,
        "lung_mass": float(np.mean(mass)),
        "lung_share": float(np.mean(share)),
        "pointing": float(np.mean(hits)),
        "images": len(stems),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="markdown table to write")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, extra in RECIPES.items():
            started = time.perf_counter()
            values = {
                **TRAINING,
                "data": str(ROOT / "classification"),
                "dataset": "csv",
                "dataset_options": {**BASE_OPTIONS, **extra},
                "image_cache": str(Path(work) / "cache"),
            }
            config = parse_config(ClassifierTrainingConfig, values)
            folder = Path(work) / name.replace(" ", "-")
            result = train_classifier(config, folder)
            checkpoint = folder / "best.pt"
            row = {
                "recipe": name,
                "val_auroc": result.best_mean_auroc,
                "best_epoch": result.best_epoch,
                "kermany_auroc": kermany_auroc(checkpoint),
                **lung_scores(checkpoint),
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(row, flush=True)
            rows.append(row)
    lines = [
        "| recipe | val AUROC (own split) | Kermany val AUROC | lung mass | lung share | "
        "pointing | best epoch | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['recipe']} | {row['val_auroc']:.3f} | {row['kermany_auroc']:.3f} | "
            f"{row['lung_mass']:.3f} | {row['lung_share']:.3f} | {row['pointing']:.2f} "
            f"({row['images']} images) | {row['best_epoch']} | {row['seconds']} |"
        )
    first, second = rows[0], rows[1]
    interval = paired_t_interval(second["per_image_mass"], first["per_image_mass"])
    rng = np.random.default_rng(0)
    differences = np.subtract(second["per_image_mass"], first["per_image_mass"])
    draws = rng.integers(0, len(differences), size=(10_000, len(differences)))
    low, high = np.quantile(differences[draws].mean(axis=1), [0.025, 0.975])
    lines += [
        "",
        f"Lung mass, {second['recipe']} - {first['recipe']}, paired over the "
        f"{len(differences)} validation images: {interval['mean']:+.3f} (paired t 95% CI "
        f"[{interval['low']:+.3f}, {interval['high']:+.3f}], bootstrap over images "
        f"[{low:+.3f}, {high:+.3f}]).",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
