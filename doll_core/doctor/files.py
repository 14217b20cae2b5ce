"""Reading the files doctor checks without trusting them: JSON, DoLL ``.pt`` files (loaded
as DoLL loads them), and the versions recorded against the installed ones."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from doll_core._version import __version__
from doll_core.atomic import TEMPORARY_NAME
from doll_core.errors import DollError
from doll_core.payloads import safe_torch_load

#: What a killed write leaves: ``.NAME.tmp-PID`` files of
#: :func:`doll_core.atomic.atomic_write` and the phantom's ``.NAME.partial-PID`` staging
#: folders (``--resume`` removes both).
TEMPORARY = TEMPORARY_NAME
#: The finding for such a leftover.
LEFTOVER = "temporary file or folder of an interrupted write; safe to delete (--resume removes it)"
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


def read_json(path: Path) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, why it cannot be read)``."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not readable JSON ({type(exc).__name__}: {str(exc).splitlines()[0]})"


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


def load_failure(exc: DollError, path: Path) -> str:
    """What :func:`safe_torch_load` (or a reader built on it) said, without the path."""
    text = str(exc)
    if "pickled Python objects" in text:
        return "holds pickled Python objects, which DoLL refuses to load (doll convert-weights)"
    if "checksum" in text:
        return "SHA-256 does not match manifest.json (corrupted shard)"
    inner = re.search(r"\((\w+(?:Error|Exception)[^)]*)\)\s*$", text)
    if inner is not None:
        first = inner.group(1).split(". ")[0]  # torch adds paragraphs of advice
        return f"does not load (truncated or corrupted?): {first}"
    return text.replace(str(path), path.name)


def current_versions() -> dict[str, str]:
    """The versions :func:`doll_core.experiment.runner.environment` would record now."""
    from doll_core.experiment.runner import environment

    found = environment("cpu")
    return {k: str(found[k]) for k in VERSION_KEYS if k in found}
