"""Shared fixtures: fake installed distributions, and a clean plugin registry per test."""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from doll_core.registry import reset_registry

REPO_ROOT = Path(__file__).resolve().parents[1]

#: ``install(dist_name, entry_points, modules)`` -> the site directory it wrote.
InstallFake = Callable[[str, Mapping[str, str], Mapping[str, str]], Path]


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no cached registry and no ``DOLL_PLUGINS`` filter."""
    monkeypatch.delenv("DOLL_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def install_fake_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InstallFake]:
    """Make a distribution visible to ``importlib.metadata`` without pip.

    Writes ``NAME-VERSION.dist-info/{METADATA,entry_points.txt}`` and the given modules into
    a fresh directory and puts that directory on ``sys.path``, which is exactly how an
    installed package is found. Modules it imported are forgotten afterwards.
    """
    written_modules: list[str] = []

    def install(
        dist_name: str, entry_points: Mapping[str, str], modules: Mapping[str, str]
    ) -> Path:
        site = tmp_path / f"site-{dist_name}"
        info = site / f"{dist_name.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1.0\n"
        )
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[doll]\n{lines}")
        for module_name, source in modules.items():
            (site / f"{module_name}.py").write_text(textwrap.dedent(source))
            written_modules.append(module_name)
        monkeypatch.syspath_prepend(str(site))
        return site

    yield install
    for name in written_modules:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small phantom for the whole session (64 px; every layout, JSRT included)."""
    from doll_core.phantom.writer import PhantomSpec, write_phantom

    root = tmp_path_factory.mktemp("phantom") / "phantom"
    spec = PhantomSpec(n_train=24, n_valid=8, n_organs=4, n_infection=10, n_jsrt=2, size=64)
    write_phantom(root, spec)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoints(small_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two quickly trained tiny classifiers (different seeds) on the small phantom."""
    from doll_core.configuration import parse_config
    from doll_core.training.classifier import train_classifier
    from doll_core.training.config import ClassifierTrainingConfig

    paths = []
    for seed in (0, 1):
        config = parse_config(
            ClassifierTrainingConfig,
            {
                "data": small_phantom,
                "backbone": "tiny_cnn",
                "backbone_params": {"width": 4},
                "image_size": 32,
                "batch_size": 8,
                "epochs": 1,
                "num_workers": 0,
                "seed": seed,
            },
        )
        out = tmp_path_factory.mktemp(f"classifier{seed}") / "run"
        train_classifier(config, out)
        paths.append(out / "best.pt")
    return paths


@pytest.fixture(scope="session")
def resnet_checkpoint(small_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-18 classifier after two steps (its encoder fits an smp encoder)."""
    from doll_core.configuration import parse_config
    from doll_core.training.classifier import train_classifier
    from doll_core.training.config import ClassifierTrainingConfig

    config = parse_config(
        ClassifierTrainingConfig,
        {
            "data": small_phantom,
            "backbone": "resnet18",
            "image_size": 32,
            "batch_size": 8,
            "epochs": 1,
            "num_workers": 0,
            "max_steps_per_epoch": 2,
        },
    )
    out = tmp_path_factory.mktemp("resnet") / "run"
    train_classifier(config, out)
    return out / "best.pt"


@pytest.fixture(scope="session")
def small_label_store(
    small_phantom: Path, resnet_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Saliency labels of 16 training images by the ResNet-18 classifier, at 32²."""
    from doll_core.configuration import parse_config
    from doll_core.labels.config import LabelGenerationConfig
    from doll_core.labels.generate import generate_labels

    config = parse_config(
        LabelGenerationConfig,
        {
            "data": small_phantom,
            "classifiers": [resnet_checkpoint],
            "explainer": "saliency",
            "targets": "all",
            "label_size": 32,
            "limit": 16,
            "shard_size": 8,
            "device": "cpu",
        },
    )
    out = tmp_path_factory.mktemp("store") / "labels"
    generate_labels(config, out)
    return out


@pytest.fixture
def free_port() -> int:
    """A free TCP port on the loopback interface (for gloo process groups)."""
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return int(handle.getsockname()[1])
