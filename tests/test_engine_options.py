"""The engine's execution options apart from the explainers' parameters: ``[explanation.engine]``,
``engine=EngineOptions(...)``, and the old place (explainer parameters) for one release."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from experiments_helpers import TINY
from torch import nn

import doll_core
from doll_core.attribution.api import create_explainer
from doll_core.attribution.engine import EngineOptions
from doll_core.errors import DollError, PluginError
from doll_core.experiment.config import DataSources, stage_configs
from doll_core.experiment.loading import validate_experiment
from doll_core.experiment.overrides import apply_overrides
from doll_core.labels.config import LabelGenerationConfig
from doll_core.registry import get_registry


def _document(*overrides: str) -> dict[str, Any]:
    return apply_overrides(tomllib.loads(TINY), list(overrides))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 14),
    )


def test_engine_options_are_not_explainer_parameters() -> None:
    registry = get_registry()
    with pytest.raises(PluginError, match=r"does not accept parameters \['max_rows'\]"):
        registry.create("explainer", "integrated_gradients", max_rows=4)
    plugin = registry.create("explainer", "integrated_gradients", engine=EngineOptions(max_rows=4))
    assert plugin.options.max_rows == 4


def test_the_engine_section_is_checked_and_reaches_the_label_config() -> None:
    experiment = validate_experiment(
        _document("explanation.engine={max_rows = 8, completeness = false}")
    )
    assert experiment.explanation.engine == EngineOptions(max_rows=8, completeness=False)
    labels = stage_configs(experiment, DataSources.placeholder(experiment)).labels
    assert labels.engine == EngineOptions(max_rows=8, completeness=False)
    for bad, message in [
        ("explanation.engine={bogus = 1}", "explanation.engine.bogus: unknown key"),
        ('explanation.engine={autocast = "fp8"}', "explanation.engine.autocast: Input should be"),
        (
            "explanation.engine={autocast_check_every = 0}",
            "explanation.engine.autocast_check_every",
        ),
    ]:
        with pytest.raises(DollError) as caught:
            validate_experiment(_document(bad))
        assert message in str(caught.value)


def test_engine_options_in_the_old_place_still_work_with_a_warning_naming_the_new() -> None:
    old = _document(
        'explanation.explainer="integrated_gradients"',
        "explanation.params.integrated_gradients={n_steps = 4, max_rows = 8, compile = true}",
    )
    with pytest.warns(FutureWarning, match=r"max_rows.*\[explanation\.engine\]"):
        moved = validate_experiment(old)
    new = _document(
        'explanation.explainer="integrated_gradients"',
        "explanation.params.integrated_gradients={n_steps = 4}",
        "explanation.engine={max_rows = 8, compile = true}",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the new place warns of nothing
        explicit = validate_experiment(new)
    assert moved.explanation.engine == explicit.explanation.engine
    assert moved.explanation.params == {"integrated_gradients": {"n_steps": 4}}
    configs = [stage_configs(e, DataSources.placeholder(e)).labels for e in (moved, explicit)]
    assert configs[0] == configs[1]


def test_a_store_hash_counts_the_engine_options_that_move_maps_as_it_always_did(
    tmp_path: Path,
) -> None:
    checkpoint = tmp_path / "c.pt"
    checkpoint.write_bytes(b"stand-in")  # hashed by content only

    def config(**values: Any) -> LabelGenerationConfig:
        base = {"data": tmp_path, "classifiers": [checkpoint], "explainer_params": {"n_steps": 4}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return LabelGenerationConfig.model_validate({**base, **values})

    plain = config().content_hash()
    assert config(engine={"compile": True, "completeness_every": 8}).content_hash() == plain
    half = config(engine={"autocast": "fp16"}).content_hash()
    assert half != plain
    # the same store as a config of before 0.2 that listed autocast among the parameters
    assert config(explainer_params={"n_steps": 4, "autocast": "fp16"}).content_hash() == half


def test_engine_options_go_to_explainers_that_take_them_and_are_reported_otherwise() -> None:
    assert create_explainer("saliency", {}, EngineOptions(max_rows=3)).options.max_rows == 3
    assert create_explainer("occlusion", {}, EngineOptions(max_rows=5)).options.max_rows == 5
    with pytest.warns(RuntimeWarning, match=r"'lrp' takes no engine options; ignored"):
        create_explainer("lrp", {}, EngineOptions(max_rows=3))
    model, images = _model(), torch.rand(2, 1, 8, 8)
    targets = torch.tensor([[0, 3], [1, -1]])
    rows = doll_core.explain(model, images, targets, "saliency", engine=EngineOptions(max_rows=1))
    torch.testing.assert_close(rows, doll_core.explain(model, images, targets, "saliency"))
    with pytest.warns(FutureWarning, match=r"doll_core.explain: max_rows: engine options"):
        old = doll_core.explain(model, images, targets, "saliency", max_rows=1)
    torch.testing.assert_close(old, rows)


def test_every_old_place_of_an_engine_option_works_and_wins_over_the_section() -> None:
    ig = 'explanation.explainer="integrated_gradients"'
    with pytest.warns(FutureWarning, match=r"explainer_params: max_rows"):
        general = validate_experiment(_document(ig, "explanation.explainer_params={max_rows = 8}"))
    assert general.explanation.engine.max_rows == 8
    assert general.explanation.explainer_params == {}
    with pytest.warns(FutureWarning, match=r"explanation.params.integrated_gradients: compile"):
        overridden = validate_experiment(
            _document(
                ig,
                "explanation.engine={compile = true, max_rows = 8}",
                "explanation.params.integrated_gradients={compile = false}",
            )
        )
    assert overridden.explanation.engine == EngineOptions(compile=False, max_rows=8)


def test_engine_options_stay_refused_where_no_explainer_takes_them() -> None:
    with pytest.raises(DollError, match=r"explanation.params.lrp.max_rows: explainer 'lrp'"):
        validate_experiment(
            _document('explanation.explainer="lrp"', "explanation.params.lrp={max_rows = 8}")
        )
    with pytest.raises(DollError, match="engine must be an EngineOptions"):
        validate_experiment(_document("explanation.params.gradcam={engine = {max_rows = 8}}"))
    with pytest.raises(DollError, match=r"explanation\.engine"):
        validate_experiment(
            _document(
                'explanation.explainer="integrated_gradients"',
                'explanation.engine="fast"',
                "explanation.params.integrated_gradients={max_rows = 8}",
            )
        )
