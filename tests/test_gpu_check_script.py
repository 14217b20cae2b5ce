"""scripts/gpu_check.py, the prepared device check, runs whole on a CPU with tiny sizes
(``--smoke``), so that the script a device session relies on does not rot between the
sessions that are lent a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_runs_whole_on_a_cpu_and_records_every_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--out",
            str(out),
            "--smoke",
            "--run-dir",
            str(tmp_path / "run"),
            # the device's deadlines would cut a slow CPU's smoke run short
            "--budget-seconds",
            "100000",
            "--part1-seconds",
            "100000",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    part1 = report["engine_vs_captum"]
    variants = part1["variants"]
    assert set(variants) == {
        "captum",
        "captum_strict",
        "engine_fp32_eager",
        "engine_fp32_eager_strict",
        "engine_fp32_compiled",
        "engine_fp32_compiled_strict",
        "engine_fp16_compiled",
    }
    assert not [name for name, entry in variants.items() if "error" in entry]
    for name in ("engine_fp32_eager", "engine_fp32_eager_strict", "engine_fp32_compiled"):
        assert variants[name]["errors_vs_strict_fp32"]["max_abs"] < 1e-4  # captum's result
    assert variants["engine_fp16_compiled"]["autocast_checks"] >= 1
    assert not [point for point in part1["sweep"] if "error" in point]
    groups = {(point["n_steps"], point["batch"]) for point in part1["sweep"]}
    assert groups == {(4, 2), (2, 2), (2, 8)}  # smoke sizes of (50, 8), (25, 8), (16, 64)
    assert {(row["n_steps"], row["batch"]) for row in report["projection"]} == groups
    assert set(part1["overhead"]["by_targets"]) == {"1", "14"}
    assert part1["overhead"]["forward_pass_seconds"] > 0
    assert report["projection"] and all(
        r["gpu_hours_3_classifiers"] > 0 for r in report["projection"]
    )
    scale = report["gpu_scale"]
    assert "error" not in scale, scale
    assert set(scale["stage_seconds"]) >= {
        "phantom",
        "classifier",
        "explain",
        "labels",
        "pretrain",
        "finetune",
    }
    assert scale["mean_targets_per_image"] > 0
    trained = scale["autocast_error_trained_densenet121"]
    assert "error" not in trained, trained
    assert trained["images"] == 2 and 0 < trained["bf16"]["l2"] < 1  # smoke: 2, bf16 only
    assert 0 < trained["bf16_fp32_stem"]["l2"] < 1


def test_the_autocast_error_script_compares_reduced_precision_with_fp32(tmp_path: Path) -> None:
    out = tmp_path / "errors.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT.with_name("autocast_error.py")),
            "--backbone",
            "tiny_cnn",
            "--size",
            "16",
            "--count",
            "3",
            "--steps",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["images"] == 3 and result["reference"].startswith("strict fp32")
    for mode in ("fp16", "bf16", "fp16_fp32_stem", "bf16_fp32_stem"):
        errors = result[mode]
        assert 0 < errors["l2"] < 1 and 0 < errors["max_abs"] < 1
        assert errors["seconds_eager"] > 0
    assert result["bf16"]["l2"] > result["fp16"]["l2"]  # 8 mantissa bits against 11
