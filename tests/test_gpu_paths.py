"""The GPU options, exercised on the CPU where torch allows: ``torch.compile`` (results,
compile time, eager fallback), fp16 autocast with gradient scaling and its measured error,
channels_last rows, and DataLoader workers for label generation (same bytes, data vs
compute time recorded)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import doll_core
import doll_core.attribution.engine as engine
from doll_core import compiling
from doll_core.attribution.engine import EngineOptions, slot_gradients
from doll_core.compiling import CompiledModule, compiled
from doll_core.configuration import parse_config
from doll_core.errors import DollError
from doll_core.labels.config import LabelGenerationConfig
from doll_core.labels.generate import generate_labels
from doll_core.labels.store import LabelStore
from doll_core.registry import get_registry
from doll_core.training.classifier import train_classifier
from doll_core.training.config import ClassifierTrainingConfig


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return get_registry().create("backbone", "tiny_cnn", width=4).build(14, 1).eval()


def _identity_rows(images: torch.Tensor, index: torch.Tensor, samples: slice) -> torch.Tensor:
    return images


def test_compiled_integrated_gradients_equal_eager_and_compile_once() -> None:
    model = _tiny_model()
    images = torch.rand(5, 1, 24, 24)
    # 5 images, 3 per pass: the last pass is padded to the same 3 x 4 rows
    targets = torch.tensor([[0, 3, -1], [1, -1, -1], [2, 5, 7], [4, -1, -1], [6, 8, -1]])
    eager = doll_core.explain(model, images, targets, n_steps=4, engine=EngineOptions(max_rows=12))
    explainer = get_registry().create(
        "explainer",
        "integrated_gradients",
        n_steps=4,
        engine=EngineOptions(max_rows=12, compile=True),
    )
    first = explainer.attribute(model, images, targets)
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-6)
    report = explainer.performance_report()["compile"]
    assert report["compiled"] and report["fallback"] is None and report["compile_seconds"] > 0
    wrapper = compiled(model)
    calls = wrapper.calls
    again = explainer.attribute(model, images[:2], targets[:2])  # a smaller batch: padded
    torch.testing.assert_close(again, eager[:2], rtol=1e-4, atol=1e-6)
    assert wrapper.calls > calls and compiled(model) is wrapper
    assert "_doll_compiled" not in "".join(model.state_dict())


def test_a_model_that_does_not_compile_runs_eagerly_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        def call(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("backend exploded\nsecond line")

        return call

    monkeypatch.setattr(compiling.torch, "compile", broken)
    model = _tiny_model()
    wrapper = CompiledModule(model)
    x = torch.rand(2, 1, 16, 16)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .* running eagerly"):
        out = wrapper(x)
    torch.testing.assert_close(out, model(x))
    assert not wrapper.compiled
    assert wrapper.report()["fallback"] == "RuntimeError: backend exploded"
    torch.testing.assert_close(wrapper(x), model(x))  # stays eager, no second warning


def _vanishing_gradient_model() -> nn.Module:
    """d logit / d input = 1e-8 everywhere: under fp16's smallest normal (6e-5) and
    around its smallest subnormal (6e-8), so an unscaled fp16 backward loses it."""
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8, bias=False), nn.Linear(8, 3, bias=False)
    ).eval()
    with torch.no_grad():
        model[1].weight.fill_(1e-4)
        model[2].weight.fill_(1e-4)
    return model


def test_fp16_gradients_are_scaled_so_small_gradients_survive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _vanishing_gradient_model()
    images = torch.rand(2, 1, 4, 4)
    targets = torch.tensor([[0, 1], [2, -1]])
    reference = slot_gradients(model, images, targets, 1, _identity_rows)
    half = slot_gradients(
        model, images, targets, 1, _identity_rows, options=EngineOptions(autocast="fp16")
    )
    scaled_error = float((half - reference).abs().max() / reference.abs().max())
    monkeypatch.setattr(engine, "FP16_GRADIENT_SCALE", 1.0)
    unscaled = slot_gradients(
        model, images, targets, 1, _identity_rows, options=EngineOptions(autocast="fp16")
    )
    unscaled_error = float((unscaled - reference).abs().max() / reference.abs().max())
    assert scaled_error < 0.01 < 0.1 < unscaled_error


def test_autocast_error_is_measured_per_call_and_reported() -> None:
    model = _tiny_model()
    images = torch.rand(3, 1, 16, 16)
    targets = torch.tensor([[0, 1], [2, -1], [3, 4]])
    explainer = get_registry().create(
        "explainer", "integrated_gradients", n_steps=4, engine=EngineOptions(autocast="bf16")
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = explainer.attribute(model, images, targets)
        explainer.attribute(model, images[1:], targets[1:])
    assert len([w for w in caught if "relative error" in str(w.message)]) == 1  # once
    fp32 = doll_core.explain(model, images[:1], targets[:1], n_steps=4)
    expected = float((maps[:1] - fp32).abs().max() / fp32.abs().max())
    expected_l2 = float((maps[:1] - fp32).norm() / fp32.norm())
    report = explainer.performance_report()
    assert report["autocast"] == "bf16" and report["autocast_checks"] == 2
    assert report["autocast_relative_error_max"] >= expected * 0.999
    assert explainer.autocast_errors[0] == pytest.approx(expected, rel=1e-5)
    assert explainer.autocast_l2_errors[0] == pytest.approx(expected_l2, rel=1e-4)
    assert report["autocast_relative_l2_max"] >= expected_l2 * 0.999 > 0
    assert len(explainer.autocast_l2_errors) == 2


def test_channels_last_rows_give_the_same_maps() -> None:
    model = _tiny_model()
    images = torch.rand(2, 1, 16, 16)
    targets = torch.tensor([[0, 1], [2, -1]])
    plain = doll_core.explain(model, images, targets, n_steps=4)
    model = model.to(memory_format=torch.channels_last)
    fast = doll_core.explain(
        model, images, targets, n_steps=4, engine=EngineOptions(channels_last=True)
    )
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-6)


def test_label_generation_workers_give_the_same_shards_and_time_the_data(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    def config(workers: int) -> LabelGenerationConfig:
        return parse_config(
            LabelGenerationConfig,
            {
                "data": str(small_phantom),
                "classifiers": [str(p) for p in tiny_checkpoints],
                "explainer_params": {"n_steps": 4, "autocast": "bf16"},
                "shard_size": 6,
                "batch_size": 4,
                "label_size": 16,
                "limit": 14,
                "device": "cpu",
                "workers": workers,
            },
        )

    assert config(0).content_hash() == config(2).content_hash()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        generate_labels(config(0), tmp_path / "main")
        generate_labels(config(2), tmp_path / "workers")
    for name in ("shard-00000.pt", "shard-00001.pt", "shard-00002.pt"):
        assert (tmp_path / "main" / name).read_bytes() == (tmp_path / "workers" / name).read_bytes()
    record = json.loads((tmp_path / "workers" / "generation.json").read_text())
    assert record["workers"] == 2 and record["images_this_run"] == 14
    assert record["data_seconds"] >= 0 and record["compute_seconds"] > 0
    assert 0 <= record["data_wait_fraction"] <= 1
    performance = record["explainer"]
    assert (
        performance["autocast"] == "bf16" and performance["autocast_checks"] == 2 * 5
    )  # 2 models x (2+2+1) batches
    assert 0 < performance["autocast_relative_error_max"] < 1
    store = LabelStore(tmp_path / "workers")
    explained = sum(len(store.labels(image)[0]) for image in store.ids)
    # completeness is summed over both classifiers' maps
    assert performance["completeness"]["maps"] == 2 * explained > 0


def test_training_with_compile_records_the_compile_time(
    small_phantom: Path, tmp_path: Path
) -> None:
    values = {
        "data": small_phantom,
        "backbone": "tiny_cnn",
        "backbone_params": {"width": 4},
        "image_size": 32,
        "batch_size": 8,
        "epochs": 1,
        "num_workers": 0,
        "max_steps_per_epoch": 2,
        "device": "cpu",
    }
    eager = train_classifier(parse_config(ClassifierTrainingConfig, values), tmp_path / "eager")
    fast = train_classifier(
        parse_config(ClassifierTrainingConfig, {**values, "compile": True}), tmp_path / "compiled"
    )
    metrics = json.loads((tmp_path / "compiled" / "metrics.json").read_text())
    epoch = metrics["history"][0]
    assert epoch["compile"]["compiled"] and epoch["compile"]["compile_seconds"] > 0
    assert 0 <= epoch["train_data_wait_fraction"] <= 1
    # the same optimisation: compiled kernels round differently, so not bit-equal
    torch.testing.assert_close(
        fast.history[0]["train_loss"], eager.history[0]["train_loss"], rtol=1e-3, atol=1e-4
    )
    saved = torch.load(tmp_path / "compiled" / "best.pt", weights_only=True)
    assert not any("_orig_mod" in key or key.startswith("module.") for key in saved["state_dict"])


def test_a_failing_compiled_backward_falls_back_but_a_genuine_error_is_raised() -> None:
    wrapper = CompiledModule(_tiny_model())
    calls: list[str] = []

    def broken_then_fine() -> str:
        calls.append("compiled" if wrapper.fallback is None else "eager")
        if len(calls) == 1:
            raise RuntimeError("inductor could not compile the backward")
        return "gradients"

    with pytest.warns(RuntimeWarning, match="running eagerly"):
        assert wrapper.guarded_backward(broken_then_fine) == "gradients"
    assert calls == ["compiled", "eager"]
    assert wrapper.report()["fallback"] == "RuntimeError: inductor could not compile the backward"

    healthy = CompiledModule(_tiny_model())

    def always_broken() -> None:
        raise ValueError("the model's own bug")

    with pytest.raises(ValueError, match="own bug"):
        healthy.guarded_backward(always_broken)
    assert healthy.compiled and healthy.report()["fallback"] is None


def test_a_genuine_forward_error_is_not_taken_for_a_compile_failure() -> None:
    class Faulty(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("wrong input for this model")

    wrapper = CompiledModule(Faulty())
    with pytest.raises(ValueError, match="wrong input"):
        wrapper(torch.rand(2, 3))
    assert wrapper.compiled and wrapper.fallback is None


def test_a_model_with_compiled_code_can_still_be_deep_copied() -> None:
    model = _tiny_model()
    first = compiled(model)
    clone = copy.deepcopy(model)
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(clone(x), model(x))
    assert compiled(clone) is not first and compiled(model) is first


def test_fp16_overflow_falls_back_to_an_unscaled_gradient() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.fill_(100.0)  # d logit / d pixel = 100: x1024 overflows fp16
    images = torch.rand(2, 1, 4, 4)
    targets = torch.tensor([[0, 1], [2, -1]])
    reference = slot_gradients(model, images, targets, 1, _identity_rows)
    half = slot_gradients(
        model, images, targets, 1, _identity_rows, options=EngineOptions(autocast="fp16")
    )
    assert bool(torch.isfinite(half).all())
    torch.testing.assert_close(half, reference, rtol=1e-2, atol=1e-2)


def test_every_classifier_gets_its_autocast_check() -> None:
    models = {"a": _tiny_model(), "b": _tiny_model()}
    explainer = get_registry().create(
        "explainer",
        "integrated_gradients",
        n_steps=2,
        engine=EngineOptions(autocast="bf16", autocast_check_every=2),
    )
    measured: list[str] = []
    images = torch.rand(2, 1, 16, 16)
    targets = torch.tensor([[-1, -1], [0, 3]])  # the first image has no target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(4):  # label generation's order: a, b, a, b, ...
            for name, model in models.items():
                before = len(explainer.autocast_errors)
                explainer.attribute(model, images, targets)
                if len(explainer.autocast_errors) > before:
                    measured.append(name)
    assert measured == ["a", "b", "a", "b"]  # calls 1 and 3 of each model
    assert all(error > 0 for error in explainer.autocast_errors)  # on the explained image


def test_speed_and_reporting_switches_do_not_change_a_store_hash(
    small_phantom: Path, tiny_checkpoints: list[Path]
) -> None:
    def config(**params: Any) -> LabelGenerationConfig:
        return parse_config(
            LabelGenerationConfig,
            {
                "data": str(small_phantom),
                "classifiers": [str(p) for p in tiny_checkpoints],
                "explainer_params": {"n_steps": 4, **params},
            },
        )

    plain = config().content_hash()
    assert plain == config(compile=True, channels_last=True, completeness=False).content_hash()
    assert plain == config(autocast_check_every=8, completeness_every=8).content_hash()
    assert plain != config(autocast="fp16").content_hash()  # this one changes the maps
    half = config(autocast="fp16").content_hash()
    assert half != config(autocast="fp16", fp32_stem=True).content_hash()  # and this one


def test_an_unreadable_image_in_a_worker_stops_with_one_clear_line(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    data = tmp_path / "phantom"
    shutil.copytree(small_phantom, data)
    csv_rows = (data / "CheXpert-v1.0-small" / "train.csv").read_text().splitlines()
    broken = data / csv_rows[1].split(",")[0]  # the first training image
    broken.write_bytes(broken.read_bytes()[:40])  # truncated
    config = parse_config(
        LabelGenerationConfig,
        {
            "data": str(data),
            "classifiers": [str(tiny_checkpoints[0])],
            "explainer_params": {"n_steps": 2},
            "limit": 4,
            "batch_size": 2,
            "device": "cpu",
            "workers": 2,
            "on_error": "fail",
        },
    )
    with pytest.raises(DollError) as caught:
        generate_labels(config, tmp_path / "store")
    message = str(caught.value)
    assert message.startswith("cannot read") and broken.name in message
    assert "Traceback" not in message and "\n" not in message


def _count_host_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count ``bool(tensor)``, ``.item()`` and ``.tolist()``: on a GPU each reads a CUDA
    tensor back to the host, which waits for every pass queued before it."""
    counter = {"reads": 0}
    for name in ("__bool__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self: torch.Tensor, *args: Any, _original: Any = original) -> Any:
            counter["reads"] += 1
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counter


@pytest.mark.parametrize("autocast", [None, "fp16"])
def test_host_reads_do_not_grow_with_the_number_of_targets(
    monkeypatch: pytest.MonkeyPatch, autocast: str | None
) -> None:
    """The engine plans its passes on the host and checks fp16 overflow once per pass, so
    a GPU can run every target slot's backward pass without the host waiting in between."""
    model = _tiny_model()
    images = torch.rand(4, 1, 16, 16)
    options = EngineOptions(max_rows=16, autocast=autocast)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fp16 autocast on a CPU
        expected = [
            slot_gradients(
                model, images, torch.arange(t).repeat(4, 1), 8, _steps_rows(8), options=options
            )
            for t in (1, 6)
        ]
    counter = _count_host_reads(monkeypatch)
    reads = []
    for t, reference in zip((1, 6), expected, strict=True):
        counter["reads"] = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            maps = slot_gradients(
                model, images, torch.arange(t).repeat(4, 1), 8, _steps_rows(8), options=options
            )
        reads.append(counter["reads"])
        torch.testing.assert_close(maps, reference, rtol=0, atol=0)
    # 4 images x 8 rows, 16 rows per pass: 2 passes; 1 read per chunk plan, 1 per fp16 pass
    assert reads[0] == reads[1] <= 1 + 2 + (2 if autocast else 0)


def _steps_rows(n: int) -> Any:
    def rows(chunk: torch.Tensor, index: torch.Tensor, samples: slice) -> torch.Tensor:
        count = samples.stop - samples.start
        scaled = chunk[:, None] * torch.linspace(0.1, 1.0, n)[samples].view(1, -1, 1, 1, 1)
        return scaled.reshape(chunk.shape[0] * count, *chunk.shape[1:])

    return rows


def test_a_memory_budget_is_measured_once_per_model_and_gives_the_same_maps() -> None:
    model = _tiny_model()
    images = torch.rand(3, 1, 16, 16)
    targets = torch.tensor([[0, 2], [1, -1], [3, 4]])
    per_row = engine.activation_bytes_per_row(model, images[:1])
    budget_mb = 5 * 3 * per_row / 2**20  # room for 5 rows (x3 for gradients and slack)
    options = EngineOptions(max_rows=None, memory_budget_mb=budget_mb)
    forwards = {"n": 0}
    model.register_forward_pre_hook(lambda *_: forwards.__setitem__("n", forwards["n"] + 1))
    assert engine.rows_per_chunk(model, images[:1], options) == 5
    budgeted = [
        slot_gradients(model, images, targets, 4, _steps_rows(4), options=options) for _ in range(2)
    ]
    # the activation measurement (one 1-row forward) is made once, then 3 images x 4 rows
    # at 5 rows per pass (1 image each) are 3 passes per call
    assert forwards["n"] == 1 + 3 + 3
    explainer = get_registry().create(
        "explainer", "saliency", engine=EngineOptions(max_rows=None, memory_budget_mb=budget_mb)
    )
    explainer.attribute(model, images, targets)
    assert explainer.performance_report()["row_limit"] == 5
    by_rows = slot_gradients(
        model, images, targets, 4, _steps_rows(4), options=EngineOptions(max_rows=4)
    )
    torch.testing.assert_close(budgeted[0], by_rows)
    torch.testing.assert_close(budgeted[1], by_rows)


def test_compiled_passes_have_one_shape_per_step_count_and_pad_rows_shares_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``compile``, every pass of one step count has the same rows, whatever the batch
    size (a new shape would compile again, for about a minute on a GPU); ``pad_rows``
    gives several step counts one shape."""
    model = _tiny_model()
    shapes: list[tuple[int, ...]] = []

    def recording(module: nn.Module) -> Any:
        def forward(rows: torch.Tensor) -> torch.Tensor:
            shapes.append(tuple(rows.shape))
            return module(rows)

        return forward

    monkeypatch.setattr(engine, "compiled", recording)
    images = torch.rand(5, 1, 16, 16)
    targets = torch.tensor([[0, 3], [1, -1], [2, 5], [4, -1], [6, 8]])

    def run(n_steps: int, batch: int, pad_rows: int | None) -> set[tuple[int, ...]]:
        shapes.clear()
        padded = slot_gradients(
            model,
            images[:batch],
            targets[:batch],
            n_steps,
            _steps_rows(n_steps),
            options=EngineOptions(max_rows=12, compile=True, pad_rows=pad_rows),
        )
        plain = slot_gradients(
            model,
            images[:batch],
            targets[:batch],
            n_steps,
            _steps_rows(n_steps),
            options=EngineOptions(max_rows=12),
        )
        torch.testing.assert_close(padded, plain)
        return {shape[:1] for shape in shapes}

    # 5 steps: 2 images (10 rows) per pass, for 5, 3 and 1 images
    assert run(5, 5, None) | run(5, 3, None) | run(5, 1, None) == {(10,)}
    assert run(4, 5, None) == {(12,)}  # 3 images x 4 steps
    assert run(5, 5, 12) | run(4, 2, 12) | run(16, 1, 12) == {(12,)}


def test_the_fp32_stem_view_shares_the_model_and_runs_its_first_conv_in_fp32() -> None:
    from doll_core.attribution.stem import FP32Module, fp32_stem_view, stem_name

    model = _tiny_model()
    keys = list(model.state_dict())
    compiled_model = compiled(model)  # a cached compiled copy must not serve the view
    view = fp32_stem_view(model)
    name = stem_name(model)
    assert name is not None and isinstance(view.get_submodule(name), FP32Module)
    assert not isinstance(model.get_submodule(name), FP32Module)  # the model is untouched
    assert list(model.state_dict()) == keys and fp32_stem_view(model) is view
    assert compiled(view) is not compiled_model
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(view(x), model(x), rtol=0, atol=0)
    with torch.no_grad():
        model.get_submodule(name).weight.mul_(2.0)  # the view follows the model's weights
    torch.testing.assert_close(view(x), model(x), rtol=0, atol=0)
    copied = copy.deepcopy(model)  # a copy's view runs the copy's modules
    assert fp32_stem_view(copied) is not view
    torch.testing.assert_close(fp32_stem_view(copied)(x), copied(x), rtol=0, atol=0)
    # a module replaced in the model (its last layer) gets a new view that runs it
    last_name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, child_name = last_name.rpartition(".")
    setattr(model.get_submodule(parent_name), child_name, nn.Linear(last.in_features, 5))
    assert fp32_stem_view(model) is not view and fp32_stem_view(model)(x).shape == (2, 5)
    torch.testing.assert_close(fp32_stem_view(model)(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("fp32_stem", [False, True])
def test_fp32_stem_runs_the_engine_s_first_conv_in_fp32_under_autocast(fp32_stem: bool) -> None:
    from doll_core.attribution.stem import stem_name

    model = _tiny_model()
    stem = model.get_submodule(stem_name(model) or "")
    dtypes: set[torch.dtype] = set()
    stem.register_forward_hook(lambda _m, _i, output: dtypes.add(output.dtype))
    images = torch.rand(2, 1, 16, 16)
    targets = torch.tensor([[0, 3], [1, -1]])
    explainer = get_registry().create(
        "explainer",
        "integrated_gradients",
        n_steps=4,
        engine=EngineOptions(
            autocast="bf16", fp32_stem=fp32_stem, autocast_check_every=10**6, completeness=False
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        maps = explainer.attribute(model, images, targets)
    # the first call's fp32 check runs the plain model too: its passes are in float32
    assert dtypes == ({torch.float32} if fp32_stem else {torch.bfloat16, torch.float32})
    assert bool(torch.isfinite(maps).all())
    report = explainer.performance_report()
    assert report["fp32_stem"] is fp32_stem
    assert report["fp32_stem_layer"] == ([stem_name(model)] if fp32_stem else None)


def test_fp32_stem_compiles_its_view_and_reports_that_compile() -> None:
    model = _tiny_model()
    images = torch.rand(3, 1, 16, 16)
    targets = torch.tensor([[0, 3], [1, -1], [2, 4]])
    options = EngineOptions(autocast="bf16", fp32_stem=True, completeness=False, max_rows=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        eager = get_registry().create(
            "explainer", "integrated_gradients", n_steps=4, engine=options
        )
        expected = eager.attribute(model, images, targets)
        explainer = get_registry().create(
            "explainer",
            "integrated_gradients",
            n_steps=4,
            engine=dataclasses.replace(options, compile=True),
        )
        maps = explainer.attribute(model, images, targets)
    torch.testing.assert_close(maps, expected, rtol=1e-3, atol=1e-5)
    report = explainer.performance_report()["compile"]
    assert report["compiled"] and report["compile_seconds"] > 0  # the view's own compile
