"""Write a phantom to disk in the real layouts (see :mod:`doll_core.phantom.layout`).

Every image has its own random stream, ``(seed, set, split, index)``, so a phantom is the
same for a seed whatever the number of worker processes. Writing goes to a hidden
sibling folder that is renamed into place at the end: an interrupted run leaves no
half-written phantom behind.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from doll_core._version import __version__
from doll_core.data.chexpert_format import CHEXPERT_HEADER, format_label
from doll_core.data.imageio import JSRT_MAX_VALUE, JSRT_SHAPE, write_jsrt_img
from doll_core.errors import DollError
from doll_core.home import expand_home
from doll_core.observations import OBSERVATIONS
from doll_core.phantom import layout
from doll_core.phantom.case import Case, render_case
from doll_core.phantom.findings import covid_pattern
from doll_core.phantom.labels import FindingsConfig, report

_SET_CODES = {"chexpert": 0, "organs": 1, "infection": 2, "jsrt": 3}
_SPLIT_CODES = {"train": 0, "valid": 1, "Train": 2, "Val": 3, "Test": 4, "": 5}
COVID_CATEGORIES = ("COVID-19", "Non-COVID", "Normal")
_COVID_PREFIX = {"COVID-19": "covid", "Non-COVID": "non_covid", "Normal": "normal"}
JSRT_MASK_SIZE = 1024


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate. Sizes are in pixels; counts are images."""

    n_train: int = 500
    n_valid: int = 100
    n_organs: int = 100
    n_infection: int = 120
    n_jsrt: int = 0
    size: int = 256
    seed: int = 0
    jpeg_quality: int = 95
    findings: FindingsConfig = field(default_factory=FindingsConfig)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid", "n_organs", "n_infection", "n_jsrt"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise DollError(f"{name} must be a non-negative integer, got {value!r}")
        if not isinstance(self.size, int) or not 32 <= self.size <= 2048:
            raise DollError(f"size must be an integer from 32 to 2048, got {self.size!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise DollError(f"jpeg_quality must be from 1 to 100, got {self.jpeg_quality!r}")


@dataclass(frozen=True)
class _Task:
    kind: str
    split: str
    index: int
    name: str = ""  # patient/study path, organ id, file name ...
    extra: tuple[Any, ...] = ()


def _rng(spec: PhantomSpec, task: _Task) -> np.random.Generator:
    return np.random.default_rng(
        [spec.seed, _SET_CODES[task.kind], _SPLIT_CODES[task.split], task.index]
    )


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = array.astype(np.uint8) * 255 if array.dtype == bool else array
    Image.fromarray(image).save(path, compress_level=1)


def _patient_plan(spec: PhantomSpec) -> dict[str, list[tuple[int, int]]]:
    """(patient, study) of each CheXpert image: patients have one to three studies;
    validation patients follow the training ones, as in CheXpert."""
    rng = np.random.default_rng([spec.seed, 99])
    plan: dict[str, list[tuple[int, int]]] = {}
    patient = 0
    for split, count in (("train", spec.n_train), ("valid", spec.n_valid)):
        entries: list[tuple[int, int]] = []
        study = 0
        for _ in range(count):
            if study == 0 or study >= 3 or rng.random() < 0.6:
                patient, study = patient + 1, 1
            else:
                study += 1
            entries.append((patient, study))
        plan[split] = entries
    return plan


def _chexpert(spec: PhantomSpec, task: _Task, root: Path) -> dict[str, Any]:
    rng = _rng(spec, task)
    case = render_case(rng, spec.size, spec.findings)
    patient, study = task.extra
    relative = Path(task.split) / f"patient{patient:05d}" / f"study{study}" / "view1_frontal.jpg"
    image_path = root / layout.CHEXPERT_DIR / relative
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(case.image).save(image_path, quality=spec.jpeg_quality)
    image_id = f"{layout.CHEXPERT_DIR}/{relative.as_posix()}"
    for name, mask in case.masks.items():
        _save_png(mask, layout.lesion_mask_path(root, image_id, name))
    person = np.random.default_rng([spec.seed, 7, patient])
    codes = report(rng, case.findings.present, spec.findings, exact=task.split == "valid")
    row = [
        image_id,
        "Female" if person.random() < 0.45 else "Male",
        str(int(person.integers(18, 90)) + study - 1),
        "Frontal",
        "AP" if person.random() < 0.6 else "PA",
        *(format_label(code) for code in codes),
    ]
    return {"row": row, "present": list(case.findings.present)}


def _organs(spec: PhantomSpec, task: _Task, root: Path) -> dict[str, Any]:
    case = render_case(_rng(spec, task), spec.size, spec.findings)
    base = root / layout.ORGAN_DIR
    _save_png(case.image, base / "images" / f"{task.name}.png")
    merged = _merged_organs(case)
    for organ in layout.ORGAN_CLASSES:
        _save_png(merged[organ], base / "masks" / organ / f"{task.name}.png")
    return {"present": list(case.findings.present)}


def _merged_organs(case: Case) -> dict[str, np.ndarray]:
    return {
        "lungs": case.organs["right lung"] | case.organs["left lung"],
        "heart": case.organs["heart"],
        "clavicles": case.organs["right clavicle"] | case.organs["left clavicle"],
    }


def _infection(spec: PhantomSpec, task: _Task, root: Path) -> dict[str, Any]:
    (category,) = task.extra
    rng = _rng(spec, task)
    if category == "COVID-19":
        case = render_case(rng, spec.size, spec.findings, findings=(), extra=covid_pattern)
    elif category == "Non-COVID":
        other = ["Pneumonia"] if rng.random() < 0.5 else ["Consolidation"]
        case = render_case(rng, spec.size, spec.findings, findings=other)
    else:
        case = render_case(rng, spec.size, spec.findings, findings=())
    folder = root / layout.COVID_DIR / "Infection Segmentation Data" / task.split / category
    infection = case.extra_mask if case.extra_mask is not None else np.zeros_like(case.image, bool)
    _save_png(case.image, folder / "images" / task.name)
    _save_png(infection, folder / "infection masks" / task.name)
    _save_png(_merged_organs(case)["lungs"], folder / "lung masks" / task.name)
    return {"present": list(case.findings.present), "category": category}


def _jsrt(spec: PhantomSpec, task: _Task, root: Path) -> dict[str, Any]:
    case = render_case(_rng(spec, task), spec.size, spec.findings)
    name, fold = task.extra
    big = (
        functional.interpolate(
            torch.from_numpy(case.intensity)[None, None],
            size=JSRT_SHAPE,
            mode="bicubic",
            align_corners=False,
        )[0, 0]
        .clamp(0.0, 1.0)
        .numpy()
    )
    raw = np.round((1.0 - big) * JSRT_MAX_VALUE).astype(np.uint16)  # high = dark
    image_path = root / layout.JSRT_DIR / "images" / f"{name}.IMG"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    write_jsrt_img(image_path, raw)
    for organ, mask in case.organs.items():
        resized = (
            functional.interpolate(
                torch.from_numpy(mask.astype(np.float32))[None, None],
                size=(JSRT_MASK_SIZE, JSRT_MASK_SIZE),
                mode="nearest-exact",
            )[0, 0].numpy()
            > 0.5
        )
        path = root / layout.JSRT_DIR / "scr" / fold / "masks" / organ / f"{name}.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(resized.astype(np.uint8) * 255).save(path)
    return {"present": list(case.findings.present)}


_WRITERS: dict[str, Callable[[PhantomSpec, _Task, Path], dict[str, Any]]] = {
    "chexpert": _chexpert,
    "organs": _organs,
    "infection": _infection,
    "jsrt": _jsrt,
}


def _tasks(spec: PhantomSpec) -> list[_Task]:
    tasks: list[_Task] = []
    plan = _patient_plan(spec)
    for split in ("train", "valid"):
        tasks += [_Task("chexpert", split, i, extra=ps) for i, ps in enumerate(plan[split])]
    tasks += [_Task("organs", "", i, name=f"organ_{i + 1:04d}") for i in range(spec.n_organs)]
    n_val = n_test = spec.n_infection // 5
    splits = ["Train"] * (spec.n_infection - n_val - n_test) + ["Val"] * n_val + ["Test"] * n_test
    counters: dict[tuple[str, str], int] = {}
    for i, split in enumerate(splits):
        category = COVID_CATEGORIES[i % 3]
        number = counters[(split, category)] = counters.get((split, category), 0) + 1
        name = f"{_COVID_PREFIX[category]}_{number}.png"
        tasks.append(_Task("infection", split, i, name=name, extra=(category,)))
    nodule_rng = np.random.default_rng([spec.seed, 98])
    counts = {"LN": 0, "NN": 0}
    for i in range(spec.n_jsrt):
        kind = "LN" if nodule_rng.random() < 0.6 else "NN"
        counts[kind] += 1
        fold = "fold1" if i % 2 == 0 else "fold2"
        tasks.append(_Task("jsrt", "", i, extra=(f"JPC{kind}{counts[kind]:03d}", fold)))
    return tasks


_worker_spec: PhantomSpec | None = None
_worker_root: Path | None = None


def _init_worker(spec: PhantomSpec, root: Path) -> None:
    global _worker_spec, _worker_root
    torch.set_num_threads(1)
    _worker_spec, _worker_root = spec, root


def _run_task(task: _Task) -> dict[str, Any]:
    assert _worker_spec is not None and _worker_root is not None
    return _WRITERS[task.kind](_worker_spec, task, _worker_root)


def _results(
    spec: PhantomSpec, tasks: list[_Task], root: Path, workers: int
) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        threads = torch.get_num_threads()
        _init_worker(spec, root)
        try:
            yield from map(_run_task, tasks)
        finally:
            torch.set_num_threads(threads)
        return
    context = multiprocessing.get_context("spawn")  # no fork after torch started threads
    with context.Pool(workers, initializer=_init_worker, initargs=(spec, root)) as pool:
        yield from pool.imap(_run_task, tasks, chunksize=8)


def _prepare_target(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DollError(f"--out {out} exists and is not a folder")
    contents = list(out.iterdir())
    if not contents:
        return
    if not (out / layout.MANIFEST).is_file():
        raise DollError(f"--out {out} is not empty and holds no phantom; choose another folder")
    if not overwrite:
        raise DollError(f"--out {out} already holds a phantom; pass --overwrite to replace it")


def write_phantom(
    out: str | Path,
    spec: PhantomSpec | None = None,
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generate a phantom into ``out`` and return its manifest (also saved as
    ``PHANTOM.json``). ``progress(done, total)`` is called after each image."""
    spec = spec or PhantomSpec()
    out = expand_home(out, "phantom folder").resolve()
    _prepare_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    tasks = _tasks(spec)
    started = time.perf_counter()
    rows: dict[str, list[list[str]]] = {"train": [], "valid": []}
    prevalence = {kind: {name: 0 for name in OBSERVATIONS} for kind in _WRITERS}
    try:
        for done, (task, result) in enumerate(
            zip(tasks, _results(spec, tasks, staging, workers), strict=True), start=1
        ):
            if task.kind == "chexpert":
                rows[task.split].append(result["row"])
            for name in result["present"]:
                prevalence[task.kind][name] += 1
            if progress is not None:
                progress(done, len(tasks))
        for split, split_rows in rows.items():
            path = staging / layout.CHEXPERT_DIR / f"{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(CHEXPERT_HEADER)
                writer.writerows(split_rows)
        seconds = time.perf_counter() - started
        manifest = {
            "generator": f"doll {__version__} phantom",
            "spec": _jsonable(asdict(spec)),
            "images": {kind: sum(t.kind == kind for t in tasks) for kind in _WRITERS},
            "present": {k: {n: c for n, c in v.items() if c} for k, v in prevalence.items()},
            "seconds": round(seconds, 2),
            "images_per_second": round(len(tasks) / seconds, 2) if seconds > 0 else None,
            "workers": workers,
        }
        (staging / layout.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
