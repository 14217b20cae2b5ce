"""``doll info``: versions, compute device and plugin counts, for bug reports."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from doll_core._version import __version__
from doll_core.cli.plugins_cmd import report_failures
from doll_core.registry import get_registry

_PACKAGES = (
    "torch",
    "torchvision",
    "captum",
    "zennit",
    "segmentation-models-pytorch",
    "pluggy",
    "typer",
    "rich",
)


def _version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect_info() -> dict[str, Any]:
    """Everything ``doll info`` shows, as a JSON-ready dict."""
    import torch

    from doll_core.data.dicom import dicom_environment

    cuda = torch.cuda.is_available()
    registry = get_registry()
    return {
        "doll": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version_of(name) for name in _PACKAGES},
        "device": {
            "default": "cuda" if cuda else "cpu",
            "cuda_available": cuda,
            "cuda_version": torch.version.cuda,
            "cudnn_version": torch.backends.cudnn.version() if cuda else None,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda
            else [],
            "mps_available": bool(torch.backends.mps.is_available()),
            "threads": torch.get_num_threads(),
        },
        "dicom": dicom_environment(),
        "plugins": registry.counts(),
        "plugin_problems": len(registry.failures),
    }


def info(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show versions of DoLL and its libraries, the compute device and plugin counts."""
    data = collect_info()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        report_failures(get_registry())
        return
    table = Table(show_header=False, title=f"DoLL {data['doll']}", title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("python", f"{data['python']} ({data['platform']})")
    for name, version in data["packages"].items():
        table.add_row(name, Text(version))
    device = data["device"]
    cuda_text = (
        f"yes, CUDA {device['cuda_version']}, cuDNN {device['cudnn_version']}: "
        + ", ".join(device["gpus"])
        if device["cuda_available"]
        else "no"
    )
    table.add_row("device", device["default"])
    table.add_row("CUDA", Text(cuda_text))
    table.add_row("threads", str(device["threads"]))
    dicom = dict(data["dicom"])
    table.add_row("pydicom", Text(dicom.pop("pydicom")))
    for syntax, decoder in dicom.items():
        table.add_row(Text(f"  {syntax.split(' (')[0]} decoder"), Text(decoder))
    table.add_row("plugins", ", ".join(f"{k} {v}" for k, v in data["plugins"].items()))
    if data["plugin_problems"]:
        table.add_row("plugin problems", str(data["plugin_problems"]))
    Console().print(table)
    report_failures(get_registry())
