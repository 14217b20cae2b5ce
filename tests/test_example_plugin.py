"""The third-party plugin example: found through a real entry point, usable, and the
documentation's plugin page (docs/plugins.md, "Writing a plugin") shows exactly its code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "doll-example-plugin"
MODULE_SOURCE = (EXAMPLE / "doll_example_plugin.py").read_text()


def _install_example(install_fake_distribution: Any) -> None:
    site = install_fake_distribution(
        "doll-example-plugin", {"gradient_sign": "doll_example_plugin"}, {}
    )
    shutil.copy(EXAMPLE / "doll_example_plugin.py", site / "doll_example_plugin.py")


def _reference_gradient_sign(model: torch.nn.Module, image: torch.Tensor, target: int) -> Any:
    """Plain autograd on one image and one target: the independent reference."""
    x = image[None].clone().requires_grad_(True)
    model(x)[0, target].backward()
    assert x.grad is not None
    return x.grad[0].sign().sum(0)


def test_entry_point_discovery_without_pip(install_fake_distribution: Any) -> None:
    _install_example(install_fake_distribution)
    registry = Registry.from_environment()
    assert registry.failures == []
    info = registry.get("explainer", "gradient_sign")
    assert info.distribution == "doll-example-plugin"
    assert info.source.entry_point == "gradient_sign"
    assert info.description == "Sign of d logit[target] / d input, summed over input channels."

    torch.manual_seed(0)
    model = registry.create("backbone", "tiny_cnn").build(num_classes=14, in_channels=2).eval()
    images = torch.randn(3, 2, 16, 16)
    targets = torch.tensor([[2, 5], [7, -1], [-1, -1]])
    maps = registry.create("explainer", "gradient_sign").attribute(model, images, targets)
    assert maps.shape == (3, 2, 16, 16) and maps.dtype == torch.float32
    for i, j in [(0, 0), (0, 1), (1, 0)]:
        expected = _reference_gradient_sign(model, images[i], int(targets[i, j]))
        torch.testing.assert_close(maps[i, j], expected)
    assert maps[1, 1].abs().sum() == 0 and maps[2].abs().sum() == 0  # -1 = no target
    assert maps[0, 0].abs().sum() > 0


def test_the_cli_lists_the_example(install_fake_distribution: Any) -> None:
    _install_example(install_fake_distribution)
    result = CliRunner().invoke(app, ["plugins", "list", "--kind", "explainer", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.stdout) if r["distribution"] != "doll"]
    assert (row["name"], row["kind"], row["distribution"]) == (
        "gradient_sign",
        "explainer",
        "doll-example-plugin",
    )


def test_the_docs_show_the_example_verbatim() -> None:
    page = (REPO_ROOT / "docs" / "plugins.md").read_text()
    assert MODULE_SOURCE in page
    entry_point_block = '[project.entry-points.doll]\ngradient_sign = "doll_example_plugin"\n'
    assert entry_point_block in page
    assert entry_point_block in (EXAMPLE / "pyproject.toml").read_text()
