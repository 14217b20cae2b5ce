"""SHA-256 of files, the one way DoLL fingerprints what it wrote or was given: label
shards in a manifest, the files of a finished stage, classifier checkpoints in a label
store's hash, a fine-tuning checkpoint in a stage key."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of the file ``path``, read in blocks (hex digits)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
