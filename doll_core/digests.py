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


#: ``(path, size, mtime_ns, inode) -> SHA-256`` of files this process has hashed: the
#: points of an ablation share stage folders, and every reader of a stage's checkpoint
#: checks it, so each would hash the same unchanged file again.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def sha256_remembered(path: Path) -> str:
    """:func:`sha256_of`, remembered while the file's size, mtime and inode stay."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = sha256_of(path)
    return digest
