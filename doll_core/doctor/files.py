"""Reading the files doctor checks without trusting them: JSON and DoLL ``.pt`` files
(loaded as DoLL loads them, :mod:`doll_core.payloads`), and the versions recorded against
the installed ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doll_core._version import __version__
from doll_core.atomic import LEFTOVER, TEMPORARY_NAME
from doll_core.errors import DollError
from doll_core.payloads import load_failure, read_json, safe_torch_load

__all__ = [
    "LEFTOVER",
    "TEMPORARY",
    "VERSION_KEYS",
    "check_torch_file",
    "current_versions",
    "load_failure",
    "read_json",
]

#: What a killed write leaves: ``.NAME.tmp-PID`` files of
#: :func:`doll_core.atomic.atomic_write` and the phantom's ``.NAME.partial-PID`` staging
#: folders (``--resume`` removes both).
TEMPORARY = TEMPORARY_NAME
#: Versions ``results.json`` records that matter for reproducing a stage.
VERSION_KEYS = (
    "doll",
    "python",
    "torch",
    "torchvision",
    "captum",
    "zennit",
    "segmentation_models_pytorch",
)


def _known_formats() -> dict[str, int]:
    """Payload format -> the newest version this DoLL reads."""
    from doll_core.checkpoint import CLASSIFIER_FORMAT, CLASSIFIER_FORMAT_VERSION
    from doll_core.labels.store import SHARD_FORMAT, SHARD_VERSION
    from doll_core.segmentation.models import SEGMENTER_FORMAT, SEGMENTER_VERSION
    from doll_core.training.loop import STATE_FORMAT, STATE_VERSION

    return {
        CLASSIFIER_FORMAT: CLASSIFIER_FORMAT_VERSION,
        SEGMENTER_FORMAT: SEGMENTER_VERSION,
        STATE_FORMAT: STATE_VERSION,
        SHARD_FORMAT: SHARD_VERSION,
    }


def check_torch_file(path: Path) -> tuple[Any, str | None]:
    """Load a DoLL ``.pt`` file as DoLL does (``weights_only``): ``(payload, None)`` or
    ``(None, what is wrong)`` for an empty, truncated, pickled or foreign file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    if size == 0:
        return None, "is empty (0 bytes)"
    try:
        payload = safe_torch_load(path, "file")
    except DollError as exc:
        return None, load_failure(exc, path)
    if isinstance(payload, dict) and isinstance(payload.get("format"), str):
        newest = _known_formats().get(payload["format"])
        version = payload.get("format_version")
        if newest is not None and (not isinstance(version, int) or version > newest):
            return None, (
                f"has {payload['format']} version {version!r}; this DoLL ({__version__}) "
                f"reads versions up to {newest}"
            )
    return payload, None


def current_versions() -> dict[str, str]:
    """The versions :func:`doll_core.experiment.runner.environment` would record now."""
    from doll_core.experiment.runner import environment

    found = environment("cpu")
    return {k: str(found[k]) for k in VERSION_KEYS if k in found}
