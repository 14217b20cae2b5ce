"""Which code an exception is blamed on: a plugin's own code only, never the core's or a
lack of memory (those keep their traceback)."""

from __future__ import annotations

import pytest
import torch

from doll_core.blame import plugin_behind
from doll_core.registry import get_registry


def _raised(function: object) -> BaseException:
    try:
        function()  # type: ignore[operator]
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def test_an_error_the_core_meets_inside_a_built_in_plugin_is_not_the_plugin_s() -> None:
    registry = get_registry()
    model = registry.create("backbone", "tiny_cnn", width=4).build(14, 1).eval()
    images = torch.rand(2, 1, 16, 16)
    floats = torch.zeros(2, 1)  # a caller's bug (doll_core.explain would refuse it)
    explainer = registry.create("explainer", "integrated_gradients", n_steps=2)
    error = _raised(lambda: explainer.attribute(model, images, floats))
    # the explainer's method is on the stack, but the error came from the core engine
    assert any(tb.tb_frame.f_code.co_name == "_maps" for tb in _walk(error))
    assert plugin_behind(error, registry) is None


def test_running_out_of_memory_is_never_a_plugin_s_fault() -> None:
    registry = get_registry()

    class Hungry:
        def attribute(self, *_args: object) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory")

    error = _raised(lambda: Hungry().attribute())
    assert plugin_behind(error, registry) is None


def _walk(error: BaseException) -> list:  # type: ignore[type-arg]
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    return frames


@pytest.mark.parametrize("args", [["run", "--help"], ["doctor", "--help"], ["--help"]])
def test_help_does_not_load_the_plugins(args: list[str]) -> None:
    from typer.testing import CliRunner

    from doll_core import registry as registry_module
    from doll_core.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0
    assert registry_module._default is None  # no plugin import for --help
