"""Turn a trusted pickled weights file into one DoLL can load safely.

DoLL loads every ``.pt`` file with ``torch.load(weights_only=True)``: tensors and plain
data only, so a shared file cannot run code. An old or foreign file that pickles whole
modules or custom classes is refused; if the user trusts its source, this converts it
once into a plain state dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from doll_core.atomic import atomic_torch_save
from doll_core.errors import DollError


def tensors_of(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors in ``value`` by dotted name: a module's state dict, the tensors of a
    (nested) mapping such as ``{"state_dict": {...}, "epoch": 3}``; nothing else."""
    if isinstance(value, torch.nn.Module):
        return {f"{prefix}{k}": v.detach().cpu() for k, v in value.state_dict().items()}
    if isinstance(value, torch.Tensor):
        return {prefix.rstrip("."): value.detach().cpu()} if prefix else {}
    if isinstance(value, Mapping):
        found: dict[str, torch.Tensor] = {}
        for key, item in value.items():
            found.update(tensors_of(item, f"{prefix}{key}."))
        return found
    return {}


def convert_trusted_weights(source: str | Path, target: str | Path) -> dict[str, Any]:
    """Load ``source`` with full unpickling (**runs code from the file: only for files
    you trust**) and save its tensors as a plain state dict at ``target``.

    A top-level ``state_dict`` or ``model`` entry is taken as the weights (its keys keep
    their names); otherwise every tensor found, by dotted path.
    :returns: ``{"tensors": n, "dropped": [top-level keys without tensors]}``.
    """
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise DollError(f"weights file not found: {source}")
    if target.exists():
        raise DollError(f"{target} exists; choose another output file")
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=False)  # trusted by the user
    except Exception as exc:
        raise DollError(f"cannot read {source}: {type(exc).__name__}: {exc}") from None
    chosen = loaded
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if key in loaded:
                chosen = loaded[key]
                break
    state = tensors_of(chosen)
    if not state:
        raise DollError(f"{source} holds no tensors to keep")
    atomic_torch_save(state, target)
    dropped = (
        sorted(str(k) for k, v in loaded.items() if not tensors_of(v))
        if isinstance(loaded, Mapping)
        else []
    )
    return {"tensors": len(state), "dropped": dropped}
