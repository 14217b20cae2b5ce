"""torchxrayvision's DenseNet as the ``xrv_densenet`` backbone: its outputs equal
torchxrayvision's own forward (random weights, no download), the 18 -> 14 mapping, the
[-1024, 1024] scaling, and observations without an output are never trained, scored or
explained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional

from doll_core.checkpoint import ClassifierMeta, build_classifier, save_classifier
from doll_core.configuration import parse_config
from doll_core.convert import convert_trusted_weights
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.training.config import ClassifierSettings
from doll_plugins.xrv_backbones import (
    XRV_MEAN,
    XRV_PATHOLOGIES,
    XRV_STD,
    XRV_TO_OBSERVATION,
    XRVDenseNet,
)

xrv = pytest.importorskip("torchxrayvision", reason="pip install 'doll[xrv]'")


@pytest.fixture(scope="module")
def xrv_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """torchxrayvision's DenseNet with random weights, pickled whole as its releases are,
    and converted once to a plain state dict."""
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None).eval()
    folder = tmp_path_factory.mktemp("xrv")
    torch.save(model, folder / "xrv-densenet.pt")  # a whole pickled model, as published
    report = convert_trusted_weights(folder / "xrv-densenet.pt", folder / "weights.pt")
    assert report["tensors"] == len(model.state_dict())
    return model, folder / "weights.pt"


def _doll_model(weights: Path, outputs: str = "all") -> torch.nn.Module:
    meta = ClassifierMeta(backbone="xrv_densenet",
                          backbone_params={"weights": str(weights), "outputs": outputs},
                          in_channels=1, image_size=224, mean=XRV_MEAN, std=XRV_STD)  # fmt: skip
    return build_classifier(meta).eval()


def test_outputs_equal_torchxrayvisions_forward_on_its_scaling(
    xrv_model: tuple[torch.nn.Module, Path],
) -> None:
    """DoLL passes [0, 1] images; torchxrayvision takes (2x - 1) * 1024 at 224²: the
    mapped logits are torchxrayvision's, at 224² and at 64² (resized inside)."""
    model, weights = xrv_model
    ours = _doll_model(weights)
    images = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        theirs = model((2 * images - 1) * 1024)  # [2, 18] logits (no op_threshs)
        got = ours(images)  # [2, 14]
        small = torch.rand(2, 1, 64, 64)
        resized = functional.interpolate(small, size=(224, 224), mode="bilinear",
                                         align_corners=False)  # fmt: skip
        theirs_small, got_small = model((2 * resized - 1) * 1024), ours(small)
    assert got.shape == (2, 14)
    assert tuple(xrv.datasets.default_pathologies) == XRV_PATHOLOGIES
    for name, observation in XRV_TO_OBSERVATION.items():
        k, j = XRV_PATHOLOGIES.index(name), OBSERVATIONS.index(observation)
        torch.testing.assert_close(got[:, j], theirs[:, k], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got_small[:, j], theirs_small[:, k], rtol=1e-4, atol=1e-4)
    for name in ("No Finding", "Support Devices"):
        assert torch.equal(got[:, OBSERVATIONS.index(name)], torch.zeros(2))


def test_the_mapping_and_what_a_weight_set_did_not_train() -> None:
    assert XRVDenseNet().unavailable == ("No Finding", "Support Devices")
    assert XRVDenseNet(outputs="nih").unavailable == (
        "No Finding", "Enlarged Cardiomediastinum", "Lung Opacity", "Lung Lesion", "Fracture",
        "Support Devices",
    )  # fmt: skip  # torchxrayvision's NIH weights leave 4 outputs untrained ("")
    with pytest.raises(DollError, match="no DenseNet weight set 'imagenet'"):
        XRVDenseNet(outputs="imagenet")
    with pytest.raises(DollError, match="grey images into the 14 observations"):
        XRVDenseNet().build(num_classes=14, in_channels=3)


def test_a_classifier_takes_torchxrayvisions_normalisation_unless_told_otherwise() -> None:
    settings = parse_config(ClassifierSettings, {"backbone": "xrv_densenet"})
    assert settings.mean == XRV_MEAN and settings.std == XRV_STD
    with pytest.raises(DollError, match=r"mean: backbone 'xrv_densenet' takes mean = \[0\.5\]"):
        parse_config(ClassifierSettings, {"backbone": "xrv_densenet", "mean": [0.4]})


def test_observations_without_an_output_are_never_explained(
    xrv_model: tuple[torch.nn.Module, Path], small_phantom: Path, tmp_path: Path
) -> None:
    """A label store of every target of an xrv classifier holds no map of No Finding or
    Support Devices, and ``doll explain`` refuses them by name."""
    from typer.testing import CliRunner

    from doll_core.cli import app
    from doll_core.labels.config import LabelGenerationConfig
    from doll_core.labels.generate import generate_labels
    from doll_core.labels.store import LabelStore

    _, weights = xrv_model
    model = _doll_model(weights)
    meta = ClassifierMeta(backbone="xrv_densenet", backbone_params={"weights": str(weights)},
                          in_channels=1, image_size=64, mean=XRV_MEAN, std=XRV_STD,
                          unavailable=XRVDenseNet().unavailable)  # fmt: skip
    checkpoint = tmp_path / "xrv.pt"
    save_classifier(checkpoint, model, meta)
    values = {"data": str(small_phantom), "classifiers": [str(checkpoint)],
              "explainer": "saliency", "targets": "all", "label_size": 8, "limit": 3,
              "device": "cpu"}  # fmt: skip
    generate_labels(parse_config(LabelGenerationConfig, values), tmp_path / "labels")
    store = LabelStore(tmp_path / "labels")
    explained = {
        name for image in store.ids for name in store.manifest["images"][image]["observations"]
    }
    assert explained == set(OBSERVATIONS) - {"No Finding", "Support Devices"}
    image = next((small_phantom / "CheXpert-v1.0-small" / "train").rglob("*.jpg"))
    result = CliRunner().invoke(app, ["explain", "--checkpoint", str(checkpoint), "--image",
                                      str(image), "--out", str(tmp_path / "x.png"),
                                      "--targets", "Support Devices"])  # fmt: skip
    assert result.exit_code == 2
    assert "no output for ['Support Devices']" in result.output


XRV_EXPERIMENT = """
name = "xrv"
[data.phantom]
n_train = 24
n_valid = 12
n_organs = 6
n_infection = 0
size = 64
[data.tasks.organs]
phantom = "organs"
[training]
image_size = 64
batch_size = 12
num_workers = 0
[classifiers.all]
backbone = "xrv_densenet"
backbone_params = {{weights = {weights}}}
train = false
[classifiers.nih]
backbone = "xrv_densenet"
backbone_params = {{weights = {weights}, outputs = "nih"}}
train = false
[explanation]
explainer = "saliency"
label_size = 16
[fusion]
name = "auc_weighted"
[pretrain]
encoder_from = "all"
image_size = 32
epochs = 1
batch_size = 8
num_workers = 0
[finetune]
inits = ["classifier", "doll"]
budgets = [3]
seeds = [0]
image_size = 32
epochs = 1
eval_interval = 1
batch_size = 3
num_workers = 0
"""


def test_two_given_xrv_classifiers_run_labels_pretraining_and_finetuning(
    xrv_model: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    """``train = false``: two torchxrayvision DenseNets (random weights; the second as its
    NIH weight set) are validated, never trained, explained and fused by AUROC, and start
    the pre-training and a fine-tuning, end to end on the phantom."""
    import json

    from typer.testing import CliRunner

    from doll_core.cli import app
    from doll_core.payloads import safe_torch_load

    _, weights = xrv_model
    experiment = tmp_path / "xrv.toml"
    experiment.write_text(XRV_EXPERIMENT.format(weights=json.dumps(str(weights))))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(experiment), "--out", str(out), "--device",
                                      "cpu", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["classifiers"]) == {"all", "nih"}
    assert {run["init"] for run in results["finetune"]["runs"]} == {"classifier", "doll"}
    (given,) = (out / "stages").glob("classifier-all-*")
    saved = safe_torch_load(given / "best.pt", "checkpoint")
    loaded = xrv_model[0].state_dict()
    for key, value in saved["state_dict"].items():  # the weights as given: never trained
        if key.startswith("net.densenet."):
            assert torch.equal(value, loaded[key[len("net.densenet.") :]]), key
    auroc = saved["meta"]["val_auroc"]
    assert auroc["Support Devices"] is None and auroc["No Finding"] is None
    assert json.loads((given / "metrics.json").read_text())["trained"] is False
    (nih,) = (out / "stages").glob("classifier-nih-*")
    assert "Fracture" in safe_torch_load(nih / "best.pt", "checkpoint")["meta"]["unavailable"]


def test_the_command_line_path_from_a_published_file_to_fused_labels(
    xrv_model: tuple[torch.nn.Module, Path], small_phantom: Path, tmp_path: Path
) -> None:
    """``convert-weights --from torchxrayvision`` (a file of another model is refused and
    nothing is left), ``train-classifier --set train=false`` (a checkpoint, untrained),
    then ``doll explain`` and ``doll labels generate`` with two of them fused."""
    import json

    import torchvision
    from typer.testing import CliRunner

    from doll_core.cli import app
    from doll_core.labels.store import LabelStore

    cli = CliRunner()
    model, _ = xrv_model
    torch.save(model, tmp_path / "published.pt")
    converted = tmp_path / "weights.pt"
    result = cli.invoke(app, ["convert-weights", str(tmp_path / "published.pt"), str(converted),
                              "--trusted", "--from", "torchxrayvision"])  # fmt: skip
    assert result.exit_code == 0 and "loads as backbone xrv_densenet" in result.output
    torch.save(torchvision.models.resnet18(weights=None), tmp_path / "other.pt")
    no = tmp_path / "no.pt"
    args = ["convert-weights", str(tmp_path / "other.pt"), str(no), "--trusted"]
    refused = cli.invoke(app, [*args, "--from", "torchxrayvision"])
    assert refused.exit_code == 2 and "is not torchxrayvision's DenseNet-121" in refused.output
    assert not no.exists()

    checkpoints = []
    for outputs in ("all", "chex"):
        out = tmp_path / f"clf-{outputs}"
        weights = f"weights = {json.dumps(str(converted))}"
        args = ["train-classifier", "--data", str(small_phantom), "--backbone", "xrv_densenet",
                "--out", str(out), "--device", "cpu", "--size", "64", "--workers", "0",
                "--batch-size", "8", "--set", "train=false",
                "--set", f'backbone_params={{{weights}, outputs = "{outputs}"}}']  # fmt: skip
        result = cli.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output[result.output.index("{") :])["best_epoch"] == 0
        checkpoints.append(out / "best.pt")
    image = next((small_phantom / "CheXpert-v1.0-small" / "train").rglob("*.jpg"))
    args = ["explain", "--checkpoint", str(checkpoints[1]), "--image", str(image),
            "--out", str(tmp_path / "x.png"), "--targets", "Pleural Effusion"]  # fmt: skip
    shown = cli.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    store = tmp_path / "labels"
    args = ["labels", "generate", "--data", str(small_phantom), "--out", str(store),
            "--classifier", str(checkpoints[0]), "--classifier", str(checkpoints[1]),
            "--explainer", "saliency", "--set", 'targets="all"', "--set", "limit=2",
            "--set", "label_size=8", "--set", 'device="cpu"']  # fmt: skip
    made = cli.invoke(app, args)
    assert made.exit_code == 0, made.output
    read = LabelStore(store)
    explained = {o for i in read.ids for o in read.manifest["images"][i]["observations"]}
    chex = XRVDenseNet(outputs="chex").unavailable
    assert explained == set(OBSERVATIONS) - {"No Finding", "Support Devices", *chex}
