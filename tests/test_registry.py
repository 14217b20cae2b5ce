"""The plugin registry: discovery, isolation of broken plugins, lookups, DOLL_PLUGINS."""

from __future__ import annotations

from typing import Any

import pytest

from doll_core import hookimpl
from doll_core.errors import PluginError, UnknownPluginError
from doll_core.interfaces import PluginKind
from doll_core.registry import Registry, get_registry

BUILTINS = {
    ("resnet18", "backbone"),
    ("resnet50", "backbone"),
    ("densenet121", "backbone"),
    ("tiny_cnn", "backbone"),
    ("xrv_densenet", "backbone"),
    ("unet", "seg_head"),
    ("pspnet", "seg_head"),
    ("deeplabv3plus", "seg_head"),
    ("fpn", "seg_head"),
    ("chexpert", "dataset"),
    ("nih", "dataset"),
    ("padchest", "dataset"),
    ("mimic", "dataset"),
    ("csv", "dataset"),
    ("multi", "dataset"),
    ("segfolder", "dataset"),
    ("jsrt", "dataset"),
    ("covid-qu-ex", "dataset"),
    ("integrated_gradients", "explainer"),
    ("saliency", "explainer"),
    ("input_x_gradient", "explainer"),
    ("smoothgrad", "explainer"),
    ("gradcam", "explainer"),
    ("occlusion", "explainer"),
    ("lrp", "explainer"),
    ("mean", "fusion"),
    ("max", "fusion"),
    ("auc_weighted", "fusion"),
    ("vote", "fusion"),
    ("geometric_mean", "fusion"),
    ("deeplift", "explainer"),
    *(
        (name, "metric")
        for name in (
            "deletion",
            "insertion",
            "abpc",
            "road",
            "faithfulness_correlation",
            "cascading_randomisation",
            "random_logit",
            "sparseness",
            "entropy",
            "pointing_game",
            "hit_rate",
            "iou",
            "dice",
            "top_k_intersection",
            "relevance_rank_accuracy",
            "relevance_mass_accuracy",
            "pixel_auroc",
        )
    ),
}


class Constant:
    """An explainer that returns a constant map (for registry tests)."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def attribute(self, model: Any, images: Any, targets: Any) -> Any:
        raise NotImplementedError


def test_builtins_come_from_entry_points_of_the_doll_distribution() -> None:
    registry = get_registry()
    found = {(p.name, p.kind.value) for p in registry.plugins()}
    assert found == BUILTINS
    assert {p.distribution for p in registry.plugins()} == {"doll"}
    assert {p.source.module for p in registry.plugins()} == {
        "doll_plugins.backbones",
        "doll_plugins.seg_heads",
        "doll_plugins.datasets",
        "doll_plugins.explainers",
        "doll_plugins.fusions",
        "doll_plugins.metrics",
    }
    assert registry.failures == []
    assert all(p.description for p in registry.plugins())


def test_unknown_name_names_kind_name_closest_match_and_every_choice() -> None:
    with pytest.raises(UnknownPluginError) as caught:
        get_registry().get("backbone", "resnet19")
    message = str(caught.value)
    assert message.startswith("unknown backbone 'resnet19'; did you mean 'resnet18'?")
    for name in ("densenet121", "resnet18", "resnet50", "tiny_cnn"):
        assert name in message
    assert "unet" not in message  # only names of the asked kind


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(UnknownPluginError, match=r"unknown plugin kind 'explainers'.*explainer"):
        get_registry().names("explainers")


def test_a_plugin_that_raises_at_import_is_reported_and_others_still_load(
    install_fake_distribution: Any,
) -> None:
    install_fake_distribution(
        "doll-broken",
        {"broken": "doll_broken_mod"},
        {"doll_broken_mod": "raise RuntimeError('boom: missing CUDA toolkit')\n"},
    )
    registry = Registry.from_environment()
    assert len(registry.failures) == 1
    text = str(registry.failures[0])
    assert "'doll_broken_mod'" in text
    assert "entry point 'broken'" in text
    assert "distribution 'doll-broken'" in text
    assert "RuntimeError: boom: missing CUDA toolkit" in text
    assert {(p.name, p.kind.value) for p in registry.plugins()} == BUILTINS


def test_a_hook_that_registers_a_non_callable_is_named_and_the_rest_kept() -> None:
    class Plugin:
        @hookimpl
        def doll_register_explainers(self, register: Any) -> None:
            register("answer", 42)
            register("constant", Constant)

    registry = Registry()
    registry.add_plugin(Plugin(), name="numbers")
    assert [str(f) for f in registry.failures] == [
        "plugin module 'numbers' (entry point 'numbers' of distribution '<local>'): "
        "registered explainer 'answer' with a factory of type int, which is not callable"
    ]
    assert registry.names("explainer") == ["constant"]


def test_a_hook_that_raises_registers_nothing_and_is_named() -> None:
    class Plugin:
        @hookimpl
        def doll_register_fusions(self, register: Any) -> None:
            register("half_done", Constant)
            raise ValueError("config file missing")

    registry = Registry()
    registry.add_plugin(Plugin(), name="flaky")
    assert registry.names("fusion") == []
    (failure,) = registry.failures
    assert "'flaky'" in str(failure)
    assert "doll_register_fusions raised ValueError: config file missing" in str(failure)


@pytest.mark.parametrize("bad_name", ["", "has space", 7, "-leading"])
def test_invalid_names_are_refused(bad_name: Any) -> None:
    class Plugin:
        @hookimpl
        def doll_register_explainers(self, register: Any) -> None:
            register(bad_name, Constant)

    registry = Registry()
    registry.add_plugin(Plugin(), name="namer")
    assert registry.names("explainer") == []
    assert "registered the explainer name" in str(registry.failures[0])


def test_duplicate_names_keep_the_first_and_name_both_plugins() -> None:
    class First:
        @hookimpl
        def doll_register_explainers(self, register: Any) -> None:
            register("same", Constant, description="first")

    class Second:
        @hookimpl
        def doll_register_explainers(self, register: Any) -> None:
            register("same", Constant, description="second")

    registry = Registry()
    registry.add_plugin(First(), name="first")
    registry.add_plugin(Second(), name="second")
    assert registry.get("explainer", "same").description == "first"
    (failure,) = registry.failures
    assert "'second'" in str(failure) and "'first' " in str(failure)


def test_a_misspelt_hook_is_reported_with_the_right_name() -> None:
    class Plugin:
        @hookimpl
        def doll_register_explainer(self, register: Any) -> None:  # missing 's'
            register("lost", Constant)

    registry = Registry()
    registry.add_plugin(Plugin(), name="typo")
    (failure,) = registry.failures
    assert "'doll_register_explainer', which is not a DoLL hook" in str(failure)
    assert "did you mean 'doll_register_explainers'?" in str(failure)


def test_a_module_without_hookimpls_is_reported() -> None:
    class Plugin:
        def doll_register_explainers(self, register: Any) -> None:  # no @hookimpl
            register("lost", Constant)

    registry = Registry()
    registry.add_plugin(Plugin(), name="undecorated")
    assert "forget the decorator" in str(registry.failures[0])


def test_description_and_metadata() -> None:
    class Plugin:
        @hookimpl
        def doll_register_explainers(self, register: Any) -> None:
            register("c1", Constant)
            register("c2", Constant, description="custom", needs_gradients=False)

    registry = Registry()
    registry.add_plugin(Plugin(), name="meta")
    assert registry.get("explainer", "c1").description == Constant.__doc__.splitlines()[0]
    info = registry.get("explainer", "c2")
    assert info.description == "custom"
    assert info.to_dict()["metadata"] == {"needs_gradients": False}


def test_create_checks_parameters_and_members() -> None:
    class NoAttribute:
        """Forgets the attribute method."""

    def exploding(**_: Any) -> Any:
        raise OSError("device busy")

    class Plugin:
        @hookimpl
        def doll_register_explainers(self, register: Any) -> None:
            register("constant", Constant)
            register("incomplete", NoAttribute)
            register("exploding", exploding)

    registry = Registry()
    registry.add_plugin(Plugin(), name="create")
    assert registry.create("explainer", "constant", value=3.0).value == 3.0
    with pytest.raises(PluginError, match=r"explainer 'constant'.*\['valu'\].*it takes: value"):
        registry.create("explainer", "constant", valu=3.0)
    with pytest.raises(PluginError, match=r"explainer 'incomplete'.*without 'attribute'"):
        registry.create(PluginKind.EXPLAINER, "incomplete")
    with pytest.raises(PluginError, match=r"explainer 'exploding'.*OSError: device busy"):
        registry.create("explainer", "exploding")


def test_doll_plugins_restricts_loading(
    monkeypatch: pytest.MonkeyPatch, install_fake_distribution: Any
) -> None:
    install_fake_distribution(
        "doll-broken", {"broken": "doll_broken_mod2"}, {"doll_broken_mod2": "raise SystemError"}
    )
    monkeypatch.setenv("DOLL_PLUGINS", "seg_heads")
    registry = Registry.from_environment()
    assert registry.failures == []  # the broken one was never imported
    assert registry.names("backbone") == []
    assert registry.names("seg_head") == ["deeplabv3plus", "fpn", "pspnet", "unet"]
    with pytest.raises(UnknownPluginError, match="DOLL_PLUGINS=seg_heads restricts"):
        registry.get("backbone", "resnet18")

    monkeypatch.setenv("DOLL_PLUGINS", "doll:backbones, nonexistent")
    registry = Registry.from_environment()
    assert registry.names("backbone") == [
        "densenet121", "resnet18", "resnet50", "tiny_cnn", "xrv_densenet"
    ]  # fmt: skip
    (failure,) = registry.failures
    assert "'nonexistent'" in str(failure) and "named in DOLL_PLUGINS" in str(failure)
    assert "backbones, broken, datasets, explainers, fusions, metrics, seg_heads" in str(failure)
