"""A hand-written third-party plugin of each of the six kinds
(``tests/third_party/doll_third_party.py``, written from the documented protocols alone,
with the backbone's optional members left out) found through a real entry point and run
through ``doll run``: every stage of an experiment reads or calls one of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.errors import DollError
from doll_core.hookspecs import hookimpl
from doll_core.interfaces import OPTIONAL_MEMBERS, PluginKind, optional_member
from doll_core.registry import Registry

MODULE = Path(__file__).resolve().parent / "third_party" / "doll_third_party.py"


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def _blob(rng: np.random.Generator, size: int, centre: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < (size // 5) ** 2).astype(float)


def write_data(root: Path) -> tuple[Path, Path]:
    """A classification folder (Pneumonia = a bright blob) and a segmentation folder."""
    rng = np.random.default_rng(0)
    classes, masks = root / "classes", root / "lungs"
    table = {}
    for i in range(36):
        sick = i % 2 == 0
        pixels = rng.normal(90, 20, (48, 48))
        if sick:
            pixels += 120 * _blob(rng, 48, (int(rng.integers(12, 36)), int(rng.integers(12, 36))))
        name = f"case{i:02d}.png"
        _write_png(classes / "images" / name, pixels)
        split = "train" if i < 24 else "valid"
        table[name] = {"split": split, "positive": ["Pneumonia"] if sick else []}
    (classes / "labels.json").write_text(json.dumps(table))
    for i in range(12):
        mask = _blob(rng, 48, (24, 16 + i))
        _write_png(masks / "images" / f"l{i:02d}.png", rng.normal(80, 15, (48, 48)) + 90 * mask)
        _write_png(masks / "masks" / f"l{i:02d}.png", 255 * mask)
    return classes, masks


def experiment(classes: Path, lungs: Path) -> str:
    return f"""
name = "third-party"
[data.phantom]                  # only the evaluation's images with lesion masks
n_train = 4
n_valid = 8
n_organs = 0
n_infection = 0
size = 48
[data.classification]
root = {json.dumps(str(classes))}
dataset = "tp_folder"
[data.tasks.lungs]
root = {json.dumps(str(lungs))}
dataset = "tp_masks"
[training]
image_size = 32
epochs = 2
batch_size = 8
num_workers = 0
[classifiers.mine]
backbone = "tp_net"
[classifiers.tiny]
backbone = "tiny_cnn"
[explanation]
explainer = "tp_gradient_x_input"
label_size = 16
[fusion]
name = "tp_max"
[pretrain]
head = "tp_segmenter"
encoder = "own"
image_size = 32
epochs = 1
batch_size = 4
num_workers = 0
[finetune]
inits = ["random", "doll"]
budgets = [4]
seeds = [0]
epochs = 2
eval_interval = 2
batch_size = 2
num_workers = 0
[evaluation]
metrics = ["tp_spread"]
count = 4
batch_size = 4
bootstrap = 10
[report]
localization = false
"""


@pytest.fixture
def installed(install_fake_distribution: Any) -> None:
    site = install_fake_distribution("doll-third-party", {"third_party": "doll_third_party"}, {})
    shutil.copy(MODULE, site / "doll_third_party.py")


def test_no_registration_metadata_and_no_optional_backbone_member(installed: None) -> None:
    registry = Registry.from_environment()
    assert registry.failures == []
    for kind, name in [("backbone", "tp_net"), ("dataset", "tp_masks")]:
        plugin = registry.get(kind, name)
        assert plugin.distribution == "doll-third-party" and plugin.metadata == {}
    backbone = registry.create("backbone", "tp_net")
    for member, default in OPTIONAL_MEMBERS[PluginKind.BACKBONE].items():
        assert not hasattr(backbone, member)
        assert optional_member(backbone, "backbone", member) == default
    with pytest.raises(KeyError, match="not an optional member"):
        optional_member(backbone, "backbone", "input_mean")


def test_multi_refuses_a_source_that_is_not_an_image_dataset_reader(
    installed: None, tmp_path: Path
) -> None:
    """``multi`` reads its sources' ``load``: a reader written to the protocol alone
    (``tp_folder``) is refused when multi is built, naming the source, not at its first
    sample."""
    classes, _ = write_data(tmp_path / "data")
    registry = Registry.from_environment()
    sources = [{"name": "tp", "dataset": "tp_folder", "root": str(classes)}]
    with pytest.raises(DollError, match="multi source 'tp': dataset 'tp_folder' is not a"):
        registry.create("dataset", "multi", root=tmp_path, sources=sources, size=32)


def test_six_third_party_plugins_run_through_doll_run(installed: None, tmp_path: Path) -> None:
    classes, lungs = write_data(tmp_path / "data")
    path = tmp_path / "third_party.toml"
    path.write_text(experiment(classes, lungs))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    rows = results["finetune"]["runs"]
    assert {(r["task"], r["init"]) for r in rows} == {("lungs", "random"), ("lungs", "doll")}
    assert all(0.0 <= r["test_miou"] <= 1.0 for r in rows)
    folders = sorted(p.name for p in (out / "stages").iterdir())
    assert any(f.startswith("classifier-mine-") for f in folders)
    assert any(f.startswith("explain-tp_gradient_x_input_mine-") for f in folders)
    assert any(f.startswith("labels-tp_gradient_x_input_tp_max-") for f in folders)
    assert any(f.startswith("pretrain-tp_segmenter-") for f in folders)
    (evaluation,) = [f for f in folders if f.startswith("evaluate-")]
    board = json.loads((out / "stages" / evaluation / "evaluation.json").read_text())
    assert "tp_spread" in json.dumps(board)


def test_a_backbone_without_registration_metadata_starts_a_segmentation_model() -> None:
    """``encoder_name`` is read from the plugin object only: a backbone registered as the
    hookspec's example registers it (no metadata) is accepted as ``encoder_from``, as
    ``doll pretrain`` accepts it."""
    from experiments_helpers import TINY

    from doll_core.experiment.config import segmentation_encoder
    from doll_core.experiment.loading import validate_experiment
    from doll_plugins.backbones import BUILTIN_BACKBONES

    class Plugin:
        @hookimpl
        def doll_register_backbones(self, register: Any) -> None:
            register("my_resnet18", BUILTIN_BACKBONES["resnet18"])

    registry = Registry.from_environment()
    registry.add_plugin(Plugin(), name="mine")
    assert registry.get("backbone", "my_resnet18").metadata == {}
    import tomllib

    document = tomllib.loads(TINY.replace('backbone = "resnet18"', 'backbone = "my_resnet18"'))
    experiment = validate_experiment(document, registry=registry)
    assert segmentation_encoder(experiment, registry) == "resnet18"


def test_a_reader_built_on_the_base_class_is_called_as_it_is_written(tmp_path: Path) -> None:
    """The registry checks a user's options against a reader's signature: a reader on
    :class:`~doll_core.data.samples.ImageDataset` that passes the shared options on as
    ``**options`` lists its own (positional-or-keyword ones too) and the shared ones; one
    whose ``__init__`` states everything itself keeps exactly its own signature."""
    import inspect

    from doll_core.data.samples import ImageDataset

    class PassesOn(ImageDataset):
        def __init__(self, root: Any, split: str = "train", **options: Any) -> None:
            super().__init__(root, **options)
            self.split = split

    class StatesAll(PassesOn):
        def __init__(self, root: Any, *, size: int = 32) -> None:
            super().__init__(root, size=size)

    assert list(inspect.signature(PassesOn).parameters) == [
        "root",
        "split",
        "size",
        "grayscale",
        "on_error",
        "max_image_pixels",
    ]
    assert inspect.signature(PassesOn).parameters["size"].default is None
    assert list(inspect.signature(StatesAll).parameters) == ["root", "size"]

    class Plugin:
        @hookimpl
        def doll_register_datasets(self, register: Any) -> None:
            register("passes_on", PassesOn)

    registry = Registry()
    registry.add_plugin(Plugin(), name="mine")
    problems = registry.parameter_problems(
        "dataset", "passes_on", {"split": "a", "grayscale": "no"}
    )
    assert problems == [
        ("grayscale", "dataset 'passes_on' parameter 'grayscale' takes true or false, got 'no'")
    ]
    assert registry.create("dataset", "passes_on", root=tmp_path, split="valid").split == "valid"


def test_every_shared_reader_option_has_one_default() -> None:
    """The options a reader may be given (``ReaderOptions``) and their defaults
    (``READER_DEFAULTS``) are stated apart; an option in one only would be refused as
    unknown or lack a default."""
    from doll_core.data.samples import READER_DEFAULTS, ReaderOptions

    assert set(READER_DEFAULTS) == set(ReaderOptions.__annotations__)
