"""The GPU check: engine vs captum on DenseNet-121, then a shortened gpu_scale run.

Made for a device session of 15 minutes (see docs/gpu.md). Part 1 is estimated at 6 to 8
minutes on an H100 since the strict fp32 pair and the overhead diagnosis joined it, so
the two parts go in two calls on the same warm machine:

    python scripts/gpu_check.py --out $OUT --skip-run   # call 1 (timeout 590 s)
    python scripts/gpu_check.py --out $OUT --run-only   # call 2, within 30 s of call 1
    python scripts/gpu_check.py --out /tmp/x --smoke    # on a CPU: tiny sizes, same code

Part 1, Integrated Gradients over 14 targets, DenseNet-121 (1 channel, random weights),
224², batch 8, 50 Gauss-Legendre steps, zero baseline: captum's per-target loop (one
``attribute`` call per target slot, the whole batch in one internal batch), with PyTorch's
default TF32 convolutions and in strict fp32 (TF32 off, the accuracy reference); then
DoLL's engine in fp32 eager and fp32 compiled (each also in strict fp32, timed against
strict captum) and fp16 compiled; images/s, the ratio to captum at the same precision,
the relative error against that captum (max |difference| / max |captum|) and against
strict fp32 (max-abs and L2), and peak GPU memory. Then the fastest variant's rate for 1,
2, 4 and 14 targets per image at 50 and 25 steps (batch 8), and for 1 to 4 targets at
gpu_scale.toml's 16 steps in batches of 64, from which the CheXpert-scale projection is
computed, and where one call's time goes (GPU busy time against wall time,
host syncs, the top kernels, one forward pass alone).

Part 2, ``doll run experiments/gpu_scale.toml`` shortened with ``--set`` (fewer images,
fewer epochs, one seed); per-stage images/s from the run's own records; then the fp16 and
bf16 error against strict fp32 of the DenseNet-121 it trained (``autocast_error.py``).

Everything is written to ``--out`` as ``gpu_check.json`` (and the run's ``results.json``
and ``log.txt``); a short table is printed last.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from autocast_error import strict_fp32  # this script's folder comes first on sys.path

CHEXPERT_TRAIN_IMAGES = 223_414
CLASSIFIERS_AT_SCALE = 3


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function: Any, repeats: int, warm_up: bool = True) -> tuple[Any, list[float]]:
    """Run ``function`` once to warm up (unless ``warm_up`` is False: the caller did), then
    ``repeats`` times; the last result and the seconds of each timed run."""
    if warm_up:
        function()
        synchronize()
    result = None
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        synchronize()
        seconds.append(time.perf_counter() - started)
    return result, seconds


def captum_per_target(
    model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, steps: int, rows: int
) -> torch.Tensor:
    """captum's way to many targets: one ``IntegratedGradients.attribute`` call per target
    slot of ``targets [B, T]``, the whole batch in internal batches of ``rows`` rows;
    ``[B, T, H, W]`` maps (summed over channels)."""
    from captum.attr import IntegratedGradients

    captum = IntegratedGradients(model)
    maps = [
        captum.attribute(
            images, target=targets[:, j].tolist(), n_steps=steps, internal_batch_size=rows
        ).sum(dim=1)
        for j in range(targets.shape[1])
    ]
    return torch.stack(maps, dim=1)


def integrated_gradients(
    n_steps: int,
    rows: int,
    autocast: str | None,
    compile: bool,
    channels_last: bool,
    autocast_check_every: int = 1000,
    fp32_stem: bool = False,
) -> Any:
    """The engine's IG explainer doing captum's work: no completeness delta (its two extra
    forward passes), and by default the fp16 error measured on the first call only, so that
    the timed calls do not include the fp32 check. (Runs 1 and 2 of 2026-11-27 predate the
    ``completeness`` switch: their engine timings include the delta's two forwards.)"""
    from doll_core.attribution.engine import EngineOptions
    from doll_core.registry import get_registry

    engine = EngineOptions(
        max_rows=rows,
        autocast=autocast,
        compile=compile,
        channels_last=channels_last,
        autocast_check_every=autocast_check_every,
        completeness=False,
        fp32_stem=fp32_stem,
    )
    return get_registry().create(
        "explainer", "integrated_gradients", n_steps=n_steps, engine=engine
    )


def stale_installed_files() -> list[str]:
    """The DoLL source files whose installed copy differs from this checkout's (or is
    missing): on the device DoLL runs from a wheel, which must be rebuilt from the
    checkout first, or the whole check would measure old code under a new script."""
    import doll_core
    import doll_plugins

    repo = Path(__file__).resolve().parents[1]
    stale = []
    for package, folder in ((doll_core, "doll_core"), (doll_plugins, "plugins")):
        installed = Path(package.__file__).resolve().parent
        for source in sorted((repo / folder).rglob("*.py")):
            relative = source.relative_to(repo / folder)
            copy = installed / relative
            if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                stale.append(f"{folder}/{relative}")
    return stale


def environment(device: torch.device) -> dict[str, Any]:
    """What a run records (versions, device, GPU name), plus the date, the CPU count, the
    TF32 switches and the GPU's memory."""
    from doll_core.experiment.runner import environment as run_environment

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        **run_environment(str(device)),
        "cpu_count": os.cpu_count(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda":
        info["gpu_memory_gib"] = round(
            torch.cuda.get_device_properties(device).total_memory / 2**30
        )
    return info


#: part 1's engine variants: (name, autocast, compile, strict fp32). The strict compiled
#: variant follows the TF32 one without a fresh compile: its first call shows whether torch
#: recompiles for the TF32 switch. The fp32-stem variant compiles its own view of the
#: model without resetting torch's compile cache, so the sweep still finds fp16's code.
VARIANTS = (
    ("engine_fp32_eager", None, False, False),
    ("engine_fp32_eager_strict", None, False, True),
    ("engine_fp32_compiled", None, True, False),
    ("engine_fp32_compiled_strict", None, True, True),
    ("engine_fp16_compiled", "fp16", True, False),
    ("engine_fp16_eager", "fp16", False, False),
    ("engine_fp16_compiled_fp32_stem", "fp16", True, False),
)
#: variants run only with --all-variants (each costs a compile or more device time)
OPTIONAL_VARIANTS = ("engine_fp16_eager", "engine_fp16_compiled_fp32_stem")


def engine_vs_captum(
    device: torch.device,
    smoke: bool,
    log: Any,
    all_variants: bool = False,
    progress: Any = None,
    deadline: float = math.inf,
) -> dict[str, Any]:
    """Part 1 (see the module docstring). ``progress(result)`` is called after every
    variant and sweep group, so that a call cut short keeps what was measured; after
    ``deadline`` (a ``time.perf_counter()`` value) the remaining sweep groups and the
    overhead diagnosis are skipped, and said so."""
    progress = progress or (lambda _result: None)
    from doll_core.attribution.api import relative_errors
    from doll_core.compiling import forget
    from doll_core.registry import get_registry

    backbone, size, batch, steps, targets_n = (
        ("tiny_cnn", 32, 2, 4, 14) if smoke else ("densenet121", 224, 8, 50, 14)
    )
    repeats = 1 if smoke else 3
    torch.manual_seed(0)
    model = get_registry().create("backbone", backbone).build(14, 1).to(device).eval()
    images = torch.rand(batch, 1, size, size, device=device)
    targets = torch.arange(targets_n, device=device).repeat(batch, 1)
    # rows per forward pass, for captum's internal batch and the engine alike: 2 images x 50
    # steps (DenseNet-121 at 224² keeps about 0.3 GB per row for the backward passes)
    rows = max(1, batch * steps // 4)
    result: dict[str, Any] = {
        "model": backbone,
        "image_size": size,
        "batch": batch,
        "n_steps": steps,
        "targets_per_image": targets_n,
        "rows_per_pass": rows,
        "variants": {},
    }
    torch.backends.cudnn.benchmark = True

    def captum_loop() -> torch.Tensor:
        return captum_per_target(model, images, targets, steps, rows)

    def record(
        name: str, seconds: list[float], maps: torch.Tensor, strict: bool, extra: dict[str, Any]
    ) -> None:
        """A variant's rate, its ratio to captum at the same precision (TF32 or strict),
        its error against that captum and against strict fp32 (max-abs and L2)."""
        best = statistics.median(seconds)
        baseline_seconds, baseline_maps = captum_strict if strict else captum_tf32
        entry = {
            "strict_fp32": strict,
            "seconds_per_batch": round(best, 4),
            "images_per_second": round(batch / best, 3),
            "speedup_vs_captum": round(baseline_seconds / best, 2),
            "relative_error_vs_captum": relative_errors(maps, baseline_maps)["max_abs"],
            "errors_vs_strict_fp32": relative_errors(maps, captum_strict[1]),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if device.type == "cuda"
            else None,
            **extra,
        }
        result["variants"][name] = entry
        log(f"  {name}: {entry}")

    def reset_peak() -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    reset_peak()
    maps, seconds = timed(captum_loop, repeats)
    captum_tf32 = (statistics.median(seconds), maps)
    reset_peak()
    with strict_fp32():  # the reference: captum in strict fp32, timed too (fewer repeats)
        maps, seconds_strict = timed(captum_loop, 1)
    captum_strict = (statistics.median(seconds_strict), maps)
    record("captum", seconds, captum_tf32[1], False, {})
    record("captum_strict", seconds_strict, captum_strict[1], True, {})
    progress(result)

    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    for name, autocast, compile, strict in VARIANTS:
        if name in OPTIONAL_VARIANTS and not all_variants:
            continue
        stem = name.endswith("fp32_stem")
        try:
            reset_peak()
            if compile and not strict and not stem:  # a fresh compile, timed on its own
                torch._dynamo.reset()
                forget(model)
            explainer = integrated_gradients(
                steps, rows, autocast, compile, device.type == "cuda", fp32_stem=stem
            )

            def call(e: Any = explainer) -> torch.Tensor:
                return e.attribute(model, images, targets)

            with strict_fp32() if strict else contextlib.nullcontext():
                started = time.perf_counter()
                call()
                synchronize()
                first_call = time.perf_counter() - started
                maps, seconds = timed(call, 1 if strict else repeats, warm_up=False)
            record(
                name,
                seconds,
                maps,
                strict,
                {"first_call_seconds": round(first_call, 2), **explainer.performance_report()},
            )
        except Exception as exc:  # keep going: report what failed
            result["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            log(f"  {name} failed: {exc}")
        progress(result)

    # the fastest engine variant's rate by targets per image and steps (for the projection)
    sweep = []
    best_variant = max(
        (
            n
            for n, entry in result["variants"].items()
            if n.startswith("engine")
            and "error" not in entry
            and not entry["strict_fp32"]
            and not n.endswith("fp32_stem")
        ),
        key=lambda n: result["variants"][n]["images_per_second"],
        default=None,
    )
    if best_variant is not None:
        autocast = "fp16" if "fp16" in best_variant else None
        compile = "compiled" in best_variant
        # the benchmark's batch at its step count and at half of it, then gpu_scale.toml's
        # setting (16 steps, batches of 64). One explainer serves the whole sweep (its
        # first-call fp32 check, a new shape for cuDNN to tune, happens once), and its
        # passes are padded to the benchmark's rows, so the compiled model is not compiled
        # again; at 16 steps that is 96 rows used of 100, so that group's rates are up to
        # 4% below what gpu_scale.toml's 96-row passes give
        plan = [
            (steps, batch, (1, 2, 4, 14)),
            (steps // 2, batch, (1, 2, 4, 14)),
            (2 if smoke else 16, 8 if smoke else 64, (1, 2, 3, 4)),
        ]
        explainer = integrated_gradients(steps, rows, autocast, compile, device.type == "cuda")
        explainer.options = dataclasses.replace(explainer.options, pad_rows=rows)
        result["sweep"] = sweep
        for n_steps, images_n, counts in plan:
            if time.perf_counter() > deadline:
                log(f"  sweep group ({n_steps} steps, batch {images_n}) skipped: past the deadline")
                sweep.append({"n_steps": n_steps, "batch": images_n, "skipped": "deadline"})
                continue
            explainer.n_steps = n_steps
            sweep_images = (
                images if images_n == batch else torch.rand(images_n, 1, size, size, device=device)
            )
            all_targets = torch.arange(targets_n, device=device).repeat(images_n, 1)
            for count in counts:
                chosen = torch.full_like(all_targets, -1)
                chosen[:, :count] = all_targets[:, :count]
                point = {"n_steps": n_steps, "batch": images_n, "targets": count}
                try:
                    _, seconds = timed(
                        lambda x=sweep_images, c=chosen: explainer.attribute(model, x, c),
                        repeats,
                    )
                except Exception as exc:
                    sweep.append({**point, "error": str(exc)[:300]})
                    continue
                rate = images_n / statistics.median(seconds)
                sweep.append({**point, "images_per_second": round(rate, 2)})
                log(f"  sweep {best_variant} {point}: {rate:.2f} images/s")
            progress(result)
        if time.perf_counter() > deadline:
            result["overhead"] = {"skipped": "deadline"}
            log("  overhead diagnosis skipped: past the deadline")
        else:
            try:
                result["overhead"] = overhead_diagnosis(
                    model,
                    images,
                    targets,
                    integrated_gradients(steps, rows, autocast, compile, device.type == "cuda"),
                    rows,
                    autocast,
                    repeats,
                    log,
                )
            except Exception as exc:
                result["overhead"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                log(f"  overhead diagnosis failed: {exc}")
    result["sweep_variant"] = best_variant
    result["sweep"] = sweep
    return result


def overhead_diagnosis(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    explainer: Any,
    rows: int,
    autocast: str | None,
    repeats: int,
    log: Any,
) -> dict[str, Any]:
    """Where a call's time goes, for 1 and all targets per image, with the sweep's
    variant: the wall time; the GPU's busy time (the sum of kernel times in a profile of
    one call) and so the share the GPU waits on the host; the host syncs the call makes
    (``torch.cuda.set_sync_debug_mode``); the kernels that take the most GPU time; and the
    time of one forward pass of ``rows`` rows alone (inputs requiring grad, as the engine
    runs it), against which the per-target backward cost is read."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from doll_core.attribution.engine import _autocast
    from doll_core.compiling import compiled

    cuda = images.is_cuda
    forward = compiled(model) if explainer.options.compile else model
    row_batch = images[:1].repeat(rows, 1, 1, 1)
    if explainer.options.channels_last:
        row_batch = row_batch.contiguous(memory_format=torch.channels_last)
    row_batch.requires_grad_(True)

    def forward_only() -> torch.Tensor:
        with torch.enable_grad(), _autocast(images.device, autocast):
            return forward(row_batch).float()

    _, forward_seconds = timed(forward_only, repeats)
    report: dict[str, Any] = {
        "forward_pass_seconds": round(statistics.median(forward_seconds), 5),
        "rows_per_pass": rows,
        "by_targets": {},
    }
    for count in (1, targets.shape[1]):
        chosen = torch.full_like(targets, -1)
        chosen[:, :count] = targets[:, :count]
        call = lambda c=chosen: explainer.attribute(model, images, c)  # noqa: E731
        call()  # warm
        synchronize()
        syncs = None
        if cuda:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    call()
                    synchronize()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs = sum("synchroniz" in str(w.message) for w in caught)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as profiled:
            started = time.perf_counter()
            call()
            synchronize()
            wall = time.perf_counter() - started
        events = profiled.key_averages()

        def on_device(event: Any) -> bool:
            """A kernel or copy on the GPU (not a host op, nor a user range)."""
            kind = getattr(event, "device_type", DeviceType.CPU)
            return kind != DeviceType.CPU and not getattr(event, "is_user_annotation", False)

        def device_us(event: Any) -> float:
            for name in ("self_device_time_total", "self_cuda_time_total"):
                if hasattr(event, name):
                    return float(getattr(event, name))
            return 0.0

        kernels = [e for e in events if on_device(e)]
        busy = sum(device_us(e) for e in kernels) / 1e6
        top = sorted(kernels, key=device_us, reverse=True)[:8]
        entry = {
            "wall_seconds_profiled": round(wall, 4),
            "gpu_busy_seconds": round(busy, 4),
            "gpu_busy_fraction": round(busy / wall, 3) if cuda and wall > 0 else None,
            "host_syncs": syncs,
            "top_kernels": [
                {"name": e.key[:120], "seconds": round(device_us(e) / 1e6, 4), "calls": e.count}
                for e in top
            ],
        }
        report["by_targets"][str(count)] = entry
        log(
            f"  overhead, {count} targets: wall {wall:.3f} s, GPU busy {busy:.3f} s, "
            f"{syncs} host syncs, forward pass alone {report['forward_pass_seconds']:.4f} s"
        )
    return report


def accuracy_check(device: torch.device, smoke: bool, log: Any) -> dict[str, Any]:
    """Errors against strict fp32: captum's loop with TF32 off is the reference; then
    captum and the engine variants run with the default TF32 convolutions (as timed in part
    1) and the engine's fp32 eager also with TF32 off."""
    from doll_core.attribution.api import relative_errors
    from doll_core.registry import get_registry

    backbone, size, batch, steps = ("tiny_cnn", 32, 2, 4) if smoke else ("densenet121", 224, 8, 50)
    rows = max(1, batch * steps // 4)
    torch.manual_seed(0)
    model = get_registry().create("backbone", backbone).build(14, 1).to(device).eval()
    images = torch.rand(batch, 1, size, size, device=device)
    targets = torch.arange(14, device=device).repeat(batch, 1)

    def captum_loop() -> torch.Tensor:
        return captum_per_target(model, images, targets, steps, rows)

    def engine(autocast: str | None, compile: bool) -> torch.Tensor:
        explainer = integrated_gradients(steps, rows, autocast, compile, False, 1)
        return explainer.attribute(model, images, targets)

    errors: dict[str, Any] = {}
    with strict_fp32():
        reference = captum_loop()
        errors["engine_fp32_eager_strict"] = relative_errors(engine(None, False), reference)
    log(f"  strict fp32: engine vs captum {errors['engine_fp32_eager_strict']}")
    errors["captum_tf32"] = relative_errors(captum_loop(), reference)
    errors["engine_fp32_eager_tf32"] = relative_errors(engine(None, False), reference)
    log(f"  tf32 convs: {errors}")
    for name, autocast in (("engine_fp16_compiled", "fp16"), ("engine_fp16_eager", "fp16")):
        try:
            errors[name] = relative_errors(engine(autocast, name.endswith("compiled")), reference)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"[:300]
        log(f"  {name}: {errors[name]}")
    return {"reference": "captum's per-target loop with TF32 off (strict fp32)", **errors}


def projection(sweep: list[dict[str, Any]], mean_targets: list[float]) -> list[dict[str, Any]]:
    """GPU-hours for CheXpert-scale labels (3 classifiers), from a linear fit of
    ``seconds_per_image = a + b * targets`` to each measured (steps, batch) group of the
    sweep, at each mean number of targets per image."""
    rows = []
    groups = sorted(
        {(s["n_steps"], s.get("batch", 8)) for s in sweep if "images_per_second" in s},
        key=lambda group: (-group[0], group[1]),
    )
    for n_steps, batch in groups:
        points = [
            (s["targets"], 1.0 / s["images_per_second"])
            for s in sweep
            if (s["n_steps"], s.get("batch", 8)) == (n_steps, batch) and "images_per_second" in s
        ]
        if len(points) < 2:
            continue
        xs, ys = zip(*points, strict=True)
        x_mean, y_mean = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - x_mean) * (y - y_mean) for x, y in points) / sum(
            (x - x_mean) ** 2 for x in xs
        )
        intercept = y_mean - slope * x_mean
        for targets in mean_targets:
            per_image = intercept + slope * targets
            if per_image <= 0:  # a fit through noisy points can dip below zero
                continue
            hours = CHEXPERT_TRAIN_IMAGES * CLASSIFIERS_AT_SCALE * per_image / 3600
            rows.append(
                {
                    "n_steps": n_steps,
                    "batch": batch,
                    "mean_targets": round(targets, 2),
                    "seconds_per_image": round(per_image, 5),
                    "images_per_second": round(1 / per_image, 1),
                    "gpu_hours_3_classifiers": round(hours, 2),
                    "fit": {"intercept": intercept, "per_target": slope},
                }
            )
    return rows


def stage_rates(run: Path) -> dict[str, Any]:
    """images/s of every stage, from the run's own records."""
    from doll_core.labels.store import read_shard
    from doll_core.phantom import layout

    results = json.loads((run / "results.json").read_text())
    rates: dict[str, Any] = {"stage_seconds": results.get("stage_seconds")}
    for path in sorted(run.glob(f"stages/phantom-*/phantom/{layout.MANIFEST}")):
        record = json.loads(path.read_text())
        rates["phantom_images_per_second"] = record.get("images_per_second")
    rates["classifiers"] = results.get("classifiers")
    labels = results.get("labels", {})
    rates["labels"] = {
        k: labels.get(k) for k in ("images", "seconds", "images_per_second", "explain")
    }
    rates["localization"] = labels.get("localization")
    rates["pretrain"] = results.get("pretrain")
    targets = []  # explained (positive) observations per image, per classifier's store
    for store in run.glob("stages/explain-*/labels"):
        shards = [read_shard(path) for path in sorted(store.glob("shard-*.pt"))]
        images = sum(len(shard.ids) for shard in shards)
        if images:
            targets.append(sum(int(shard.offsets[-1]) for shard in shards) / images)
    rates["mean_targets_per_image"] = statistics.fmean(targets) if targets else None
    finetune = results.get("finetune", {}).get("runs", [])
    rates["finetune"] = [
        {k: r.get(k) for k in ("task", "init", "budget", "seed", "test_miou")} for r in finetune
    ]
    return rates


def gpu_scale_run(
    out: Path, smoke: bool, seconds_left: float, log: Any, run: Path
) -> dict[str, Any]:
    """Part 2: the shortened gpu_scale run in the folder ``run``, as a subprocess with a
    deadline."""
    repo = Path(__file__).resolve().parents[1]
    if run.exists() and any(run.iterdir()) and not (run / "experiment.json").is_file():
        return {"error": f"--run-dir {run} holds files but no doll run: not emptied"}
    shutil.rmtree(run, ignore_errors=True)  # a rerun on the same machine starts afresh
    # sized from the 2026-11-27 H200 runs: 600 images with one epoch per stage, organs
    # only, took about 130 s of stage time (run 3); part 2 runs as its own call (--run-only)
    overrides = {
        "data.phantom.n_train": 600,
        "data.phantom.n_valid": 100,
        "data.phantom.n_organs": 60,
        "data.phantom.n_infection": 100,
        "training.epochs": 1,
        "explanation.engine.compile": "false",
        "pretrain.epochs": 1,
        "finetune.tasks": '["organs"]',
        "finetune.inits": '["doll"]',
        "finetune.budgets": "[8]",
        "finetune.seeds": "[0]",
        "finetune.epochs": 5,
        "report.overlay_images": 2,
    }
    if smoke:
        overrides.update(
            {
                "data.phantom.n_train": 60,
                "data.phantom.n_valid": 20,
                "data.phantom.n_organs": 12,
                "data.phantom.n_infection": 20,
                "data.phantom.size": 64,
                "data.phantom.workers": 2,
                "training.image_size": 32,
                "training.epochs": 1,
                "training.batch_size": 8,
                "training.num_workers": 0,
                "explanation.params.integrated_gradients.n_steps": 2,
                "explanation.engine.autocast": "'bf16'",
                "explanation.workers": 0,
                "explanation.label_size": 16,
                "pretrain.image_size": 32,
                "pretrain.epochs": 1,
                "pretrain.batch_size": 8,
                "pretrain.num_workers": 0,
                "finetune.image_size": 32,
                "finetune.epochs": 1,
                "finetune.num_workers": 0,
            }
        )
    command = [
        sys.executable,
        "-m",
        "doll_core.cli",
        "run",
        str(repo / "experiments" / "gpu_scale.toml"),
        "--out",
        str(run),
        "--quiet",
    ]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    log("part 2: " + " ".join(command))
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=max(seconds_left, 30),
            cwd=run.parent,  # not the repository: doll is imported as installed
        )
    except subprocess.TimeoutExpired as exc:
        return {"error": f"timed out after {exc.timeout:.0f} s", "overrides": overrides}
    finally:
        for name in ("results.json", "log.txt"):
            if (run / name).is_file():
                (out / f"gpu_scale_{name}").write_text((run / name).read_text())
    wall = time.perf_counter() - started
    (out / "gpu_scale_output.txt").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        return {
            "error": f"exit {completed.returncode}",
            "tail": (completed.stdout + completed.stderr)[-3000:],
            "overrides": overrides,
        }
    return {"wall_seconds": round(wall, 1), "overrides": overrides, **stage_rates(run)}


def trained_autocast_error(run: Path, smoke: bool) -> dict[str, Any]:
    """fp16 and bf16 IG maps, each with and without ``fp32_stem``, against strict fp32
    (and default TF32) for the DenseNet-121 that part 2 trained, on 8 of the phantom's
    validation images at its image size, 16 steps, all 14 targets
    (``scripts/autocast_error.py``): the benchmark's random weights overstate the error
    (on the CPU, a trained ResNet-18 at 64² has a quarter of it). With ``smoke``: 2
    images, 2 steps, bf16 only (a CPU's fp16 is slow)."""
    from autocast_error import load_images, measure

    from doll_core.checkpoint import load_classifier

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    (checkpoint,) = run.glob("stages/classifier-densenet121-*/best.pt")
    (valid,) = run.glob("stages/phantom-*/phantom/CheXpert-v1.0-small/valid")
    model, meta = load_classifier(checkpoint, device=device)
    images = load_images(valid, meta.image_size, 2 if smoke else 8).to(device)
    images = images.expand(-1, meta.in_channels, -1, -1).contiguous()
    return {
        "checkpoint": str(checkpoint.relative_to(run)),
        **measure(
            model,
            images,
            n_steps=2 if smoke else 16,
            modes=("bf16",) if smoke else ("fp16", "bf16"),
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU check)")
    parser.add_argument(
        "--budget-seconds", type=float, default=510.0, help="part 2 stops at this total"
    )
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--skip-run", action="store_true", help="part 1 only")
    parts.add_argument(
        "--run-only", action="store_true", help="part 2 only (a second call after --skip-run)"
    )
    parts.add_argument(
        "--accuracy-only",
        action="store_true",
        help="only the errors against strict fp32 (part 1 measures them too)",
    )
    parser.add_argument(
        "--part1-seconds",
        type=float,
        default=450.0,
        help="part 1 skips its remaining sweep groups and diagnosis after this",
    )
    parser.add_argument("--all-variants", action="store_true", help="part 1 also times fp16 eager")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path("/tmp/gpu-scale-run"),
        help="part 2's run folder, emptied first (keep it out of --out: only 8 files return)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report: dict[str, Any] = {"environment": environment(device)}
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    def save() -> None:
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")

    log(f"environment: {report['environment']}")
    stale = stale_installed_files()
    if stale:
        report["stale_installed_files"] = stale
        save()
        log(
            f"the installed DoLL differs from this checkout in {len(stale)} files "
            f"({', '.join(stale[:5])}): rebuild the wheel from this commit (docs/gpu.md)"
        )
        return 3
    save()
    if args.accuracy_only:
        report["accuracy"] = accuracy_check(device, args.smoke, log)
        report["total_seconds"] = round(time.perf_counter() - started, 1)
        save()
        print(json.dumps(report["accuracy"], indent=1))
        return 0
    if not args.run_only:
        log("part 1: engine vs captum")
        try:

            def progress(result: dict[str, Any]) -> None:
                report["engine_vs_captum"] = result
                save()

            report["engine_vs_captum"] = engine_vs_captum(
                device,
                args.smoke,
                log,
                all_variants=args.all_variants,
                progress=progress,
                deadline=started + args.part1_seconds,
            )
        except Exception as exc:
            report["engine_vs_captum"] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"part 1 failed: {exc}")
        report["part1_seconds"] = round(time.perf_counter() - started, 1)
        save()
    if not args.skip_run:
        left = args.budget_seconds - (time.perf_counter() - started)
        report["gpu_scale"] = gpu_scale_run(args.out, args.smoke, left, log, args.run_dir)
        save()
        # then the trained DenseNet-121's reduced-precision error (about half a minute on
        # a GPU), if the run finished and the budget allows
        left = args.budget_seconds - (time.perf_counter() - started)
        if "error" in report["gpu_scale"] or left < 45:
            trained: dict[str, Any] = {"skipped": "part 2 failed or too little time left"}
        else:
            try:
                trained = trained_autocast_error(args.run_dir, args.smoke)
            except Exception as exc:
                trained = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        report["gpu_scale"]["autocast_error_trained_densenet121"] = trained
        log(f"  autocast error, trained DenseNet-121: {trained}")
        save()
    sweep = report.get("engine_vs_captum", {}).get("sweep", [])
    measured = report.get("gpu_scale", {}).get("mean_targets_per_image")
    means = sorted({2.0, 3.0, *([measured] if measured else [])})
    report["projection"] = projection(sweep, means)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    save()

    # the short table, last
    print("\n== engine vs captum ==")
    for name, entry in report.get("engine_vs_captum", {}).get("variants", {}).items():
        if "error" in entry:
            print(f"{name:24s} ERROR {entry['error'][:120]}")
            continue
        compile_info = entry.get("compile") or {}
        strict_errors = entry["errors_vs_strict_fp32"]
        print(
            f"{name:28s} {entry['images_per_second']:9.2f} img/s"
            f"  x{entry['speedup_vs_captum']:5.2f}"
            f"  err vs captum {entry['relative_error_vs_captum']:.1e}"
            f"  vs strict max {strict_errors['max_abs']:.1e} L2 {strict_errors['l2']:.1e}"
            f"  compile {compile_info.get('compile_seconds')}s  mem {entry['peak_memory_gib']} GiB"
        )
    overhead = report.get("engine_vs_captum", {}).get("overhead", {})
    for count, entry in overhead.get("by_targets", {}).items():
        print(
            f"overhead {count:>2s} targets: wall {entry['wall_seconds_profiled']} s, GPU busy "
            f"{entry['gpu_busy_seconds']} s, {entry['host_syncs']} host syncs; forward pass "
            f"alone {overhead.get('forward_pass_seconds')} s"
        )
    print("== projection (CheXpert train, 3 classifiers) ==")
    for row in report["projection"]:
        print(
            f"steps {row['n_steps']:3d}  batch {row['batch']:3d}  "
            f"mean targets {row['mean_targets']:5.2f}  "
            f"{row['images_per_second']:8.1f} img/s  {row['gpu_hours_3_classifiers']:7.2f} GPU-h"
        )
    scale = report.get("gpu_scale", {})
    print("== gpu_scale (shortened) ==")
    print(
        json.dumps(
            {
                k: scale.get(k)
                for k in ("error", "wall_seconds", "stage_seconds", "mean_targets_per_image")
            }
        )
    )
    print(f"total {report['total_seconds']} s")
    return 0 if math.isfinite(report["total_seconds"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
