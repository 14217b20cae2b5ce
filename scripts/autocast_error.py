"""How far reduced-precision (fp16, bf16 autocast) Integrated Gradients maps are from fp32.

For a trained classifier checkpoint, or a random-weight backbone, on images from a folder
(or random images): the engine's IG maps over all 14 targets in strict fp32 (TF32 off on a
GPU) are the reference; fp32 with PyTorch's default TF32 convolutions (GPU only), fp16 and
bf16 autocast, each also with the first convolution in fp32 (``fp32_stem``), are compared
with it. Both errors are given, over the whole batch and as the
median over single maps:

- max-abs: max |map - reference| / max |reference| (the project's attribution error);
- L2: ||map - reference|| / ||reference||.

    S=runs/quickstart/stages
    python scripts/autocast_error.py --checkpoint $S/classifier-resnet18-*/best.pt \\
        --images $S/phantom-*/phantom/CheXpert-v1.0-small/valid
    python scripts/autocast_error.py --backbone resnet18 --size 64   # random weights

``scripts/gpu_check.py`` calls :func:`measure` on the DenseNet-121 its part 2 trains.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and matmuls for the duration."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def load_images(folder: Path, size: int, count: int) -> torch.Tensor:
    """The first ``count`` images under ``folder`` (sorted paths), grey, resized to
    ``size``: ``[count, 1, size, size]`` in [0, 1]."""
    from doll_core.data.imageio import read_image, resize_image

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise ValueError(f"no images under {folder}")
    return torch.stack(
        [
            resize_image(torch.from_numpy(read_image(p, at_least=(size, size))), (size, size))
            for p in paths
        ]
    )


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _errors(maps: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Whole-batch (:func:`doll_core.attribution.api.relative_errors`) and per-map
    (median) max-abs and L2 errors; maps ``[B, T, H, W]``."""
    from doll_core.attribution.api import relative_errors

    whole = relative_errors(maps, reference)
    difference, reference = maps.double() - reference.double(), reference.double()
    per_max = difference.abs().amax(dim=(2, 3)) / reference.abs().amax(dim=(2, 3))
    per_l2 = difference.norm(dim=(2, 3)) / reference.norm(dim=(2, 3))
    kept = reference.abs().amax(dim=(2, 3)) > 0  # maps that are not all zero
    return {
        **whole,
        "per_map_max_abs_median": statistics.median(per_max[kept].tolist()),
        "per_map_l2_median": statistics.median(per_l2[kept].tolist()),
    }


def measure(
    model: torch.nn.Module,
    images: torch.Tensor,
    n_steps: int = 16,
    max_rows: int = 64,
    modes: tuple[str, ...] = ("fp16", "bf16"),
) -> dict[str, Any]:
    """Errors of each precision against strict fp32, IG over all 14 targets of every image.

    :param model: a classifier with 14 outputs, on the device of ``images``.
    :param images: ``[B, C, H, W]``.
    """
    from doll_core.attribution.engine import EngineOptions
    from doll_core.registry import get_registry

    targets = torch.arange(14, device=images.device).repeat(len(images), 1)

    def maps(autocast: str | None, fp32_stem: bool = False) -> tuple[torch.Tensor, float]:
        """The maps, and the seconds of a second call (the first tunes cuDNN for new
        shapes and makes the explainer's own fp32 check)."""
        engine = EngineOptions(
            max_rows=max_rows,
            autocast=autocast,
            fp32_stem=fp32_stem,
            completeness=False,
            autocast_check_every=10**9,  # measured here, against strict fp32
        )
        explainer = get_registry().create(
            "explainer", "integrated_gradients", n_steps=n_steps, engine=engine
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            explainer.attribute(model, images, targets)
            _synchronize()
            started = time.perf_counter()
            result = explainer.attribute(model, images, targets)
            _synchronize()
        return result, time.perf_counter() - started

    def entry(autocast: str | None, fp32_stem: bool = False) -> dict[str, Any]:
        try:
            computed, seconds = maps(autocast, fp32_stem)
        except RuntimeError as exc:  # a precision the device does not support
            return {"error": str(exc).splitlines()[0][:200]}
        return {**_errors(computed, reference), "seconds_eager": round(seconds, 4)}

    with strict_fp32():
        reference, strict_seconds = maps(None)
    result: dict[str, Any] = {
        "reference": "strict fp32 (TF32 off)",
        "reference_seconds_eager": round(strict_seconds, 4),
        "images": len(images),
        "image_size": images.shape[-1],
        "n_steps": n_steps,
        "targets_per_image": 14,
    }
    if images.is_cuda:
        result["fp32_tf32"] = entry(None)
    for mode in modes:
        result[mode] = entry(mode)
        result[f"{mode}_fp32_stem"] = entry(mode, fp32_stem=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a DoLL classifier checkpoint")
    source.add_argument("--backbone", help="a backbone with random weights (weights=None)")
    parser.add_argument("--images", type=Path, help="a folder of images (default: random)")
    parser.add_argument("--size", type=int, help="image side (default: the checkpoint's)")
    parser.add_argument("--count", type=int, default=8, help="images (default 8)")
    parser.add_argument("--steps", type=int, default=16, help="IG steps (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()

    from doll_core.checkpoint import load_classifier
    from doll_core.registry import get_registry

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    if args.checkpoint is not None:
        model, meta = load_classifier(args.checkpoint, device=device)
        size = args.size or meta.image_size
        channels = meta.in_channels
    else:
        size = args.size or 224
        channels = 1
        model = get_registry().create("backbone", args.backbone).build(14, channels)
        model = model.to(device).eval()
    if args.images is not None:
        try:
            images = load_images(args.images, size, args.count)
        except ValueError as exc:
            print(f"autocast_error.py: {exc}")
            return 2
        images = images.expand(-1, channels, -1, -1).contiguous()
    else:
        images = torch.rand(args.count, channels, size, size)
    result = {
        "model": str(args.checkpoint or f"{args.backbone} (random weights)"),
        "images_from": str(args.images or "random"),
        **measure(model, images.to(device), n_steps=args.steps),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
