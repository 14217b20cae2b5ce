"""Images decoded once: a reader's images at the size a stage reads, kept on disk.

Real radiographs are large (2000² JPEGs, 16-bit PNGs, DICOM) and every stage reads them
many times: a classifier every epoch, label generation, pre-training every epoch, and each
of a grid's fine-tuning runs its validation and test images. :func:`decode_resized` turns a
file into the image a reader hands on — decoded (a JPEG at the smallest DCT scale still at
least the target size), made grey or RGB, resized bilinearly with anti-aliasing — and
rounds it to the depth its file has: ``uint8`` for 8-bit files, ``uint16`` for 16-bit
files and DICOM. Rounding always happens, with or without a cache, so a cached image is
bit for bit the image read from the file.

:class:`DecodedImages` keeps those arrays in a folder, one ``.npz`` file per image and
setting, named by a hash of the file's identity (resolved path, size, modification time,
inode) and the reader's settings (size, channels, pixel limit, :data:`DECODE_VERSION`):
a file that changes is decoded again; an entry is written to a temporary file and renamed
into place, so DataLoader workers and several processes may fill one cache at once, and a
damaged entry is decoded again, never used.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doll_core.atomic import atomic_write
from doll_core.data.imageio import (
    MAX_IMAGE_PIXELS,
    ImageFacts,
    read_image_and_facts,
    resize_image,
)
from doll_core.errors import DollError
from doll_core.interfaces import offers_member

#: Bumped when the decoding rule changes, so that no cache serves images decoded another way.
DECODE_VERSION = 2  # 2: DICOM decoded by DoLL's chosen plugin (doll_core.data.dicom)
#: PIL modes whose values are 8-bit (everything else, and DICOM, is kept at 16 bits).
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})


def bit_depth(facts: ImageFacts) -> int:
    """8 for a file of 8-bit values, else 16 (16-bit and 32-bit files, DICOM)."""
    return 8 if facts.format != "DICOM" and facts.mode in EIGHT_BIT_MODES else 16


def quantise(image: torch.Tensor, bits: int) -> np.ndarray:
    """``float32 [C, H, W]`` in [0, 1] -> ``uint8`` (``bits`` 8) or ``uint16`` (16), by
    rounding to the nearest level."""
    top = 255 if bits == 8 else 65535
    levels = torch.round(image.clamp(0, 1) * top).numpy()
    return levels.astype(np.uint8 if bits == 8 else np.uint16)


def to_unit(levels: np.ndarray) -> torch.Tensor:
    """``uint8`` / ``uint16`` ``[C, H, W]`` -> ``float32`` in [0, 1]."""
    top = 255.0 if levels.dtype == np.uint8 else 65535.0
    return torch.from_numpy(levels.astype(np.float32) / np.float32(top))


def decode_resized(
    path: str | Path,
    *,
    grayscale: bool,
    size: tuple[int, int] | None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> tuple[np.ndarray, ImageFacts]:
    """A file as a reader hands it on: ``uint8`` or ``uint16`` ``[C, H, W]`` at ``size``
    (``None``: the file's own), and the :class:`ImageFacts` of the file.

    :raises ImageReadError: for a file that cannot be read.
    """
    array, facts = read_image_and_facts(
        path, grayscale=grayscale, at_least=size, max_pixels=max_pixels
    )
    image = resize_image(torch.from_numpy(array), size)
    return quantise(image, bit_depth(facts)), facts


class DecodedImages:
    """A folder of decoded images (see the module). ``folder`` is made on first write.

    Args:
        folder (str | Path): where the entries live (``<hash[:2]>/<hash>.npz``).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise DollError(f"image cache: {self.folder} exists and is not a folder")
        #: reads served from the folder and images decoded, in this process
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"DecodedImages({str(self.folder)!r})"

    def key(self, path: Path, settings: dict[str, Any]) -> str | None:
        """The entry's name for ``path`` read with ``settings``; ``None`` when the file
        cannot be stat'ed (the read that follows says why)."""
        try:
            resolved = path.resolve()
            stat = resolved.stat()
        except OSError:
            return None
        identity = [str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ino]
        text = json.dumps([DECODE_VERSION, identity, settings], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def load(
        self,
        path: str | Path,
        *,
        grayscale: bool,
        size: tuple[int, int] | None,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
    ) -> tuple[np.ndarray, ImageFacts]:
        """:func:`decode_resized` of ``path``, from the folder when it holds the entry."""
        path = Path(path)
        settings = {"grayscale": grayscale, "size": size, "max_pixels": max_pixels}
        key = self.key(path, settings)
        if key is not None:
            found = self._read(self._entry(key))
            if found is not None:
                self.hits += 1
                return found
        levels, facts = decode_resized(path, grayscale=grayscale, size=size, max_pixels=max_pixels)
        self.misses += 1
        if key is not None:
            self._write(self._entry(key), levels, facts)
        return levels, facts

    @staticmethod
    def _read(entry: Path) -> tuple[np.ndarray, ImageFacts] | None:
        try:
            with np.load(entry, allow_pickle=False) as stored:
                levels = stored["levels"]
                facts = json.loads(str(stored["facts"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            entry.unlink(missing_ok=True)  # damaged: decoded again and rewritten
            return None
        fraction = facts.get("colour_fraction")
        return levels, ImageFacts(
            facts["format"], facts["mode"], (int(facts["size"][0]), int(facts["size"][1])), fraction
        )

    @staticmethod
    def _write(entry: Path, levels: np.ndarray, facts: ImageFacts) -> None:
        """Write ``entry`` atomically (:func:`~doll_core.atomic.atomic_write`); a cache that
        cannot be written (full disk, read-only folder) costs speed, not the run."""
        record = {
            "format": facts.format,
            "mode": facts.mode,
            "size": list(facts.size),
            "colour_fraction": facts.colour_fraction,
        }
        facts_text = np.array(json.dumps(record))
        try:
            atomic_write(entry, lambda out: np.savez(out, levels=levels, facts=facts_text))
        except OSError:
            return


def read_levels(
    path: str | Path,
    *,
    grayscale: bool,
    size: tuple[int, int] | None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    cache: DecodedImages | None = None,
) -> tuple[torch.Tensor, ImageFacts]:
    """An image as a reader hands it on: ``float32 [C, H, W]`` in [0, 1] at ``size``,
    rounded to its file's depth (:func:`decode_resized`), through ``cache`` if given; and
    the file's :class:`ImageFacts`."""
    if cache is not None:
        levels, facts = cache.load(path, grayscale=grayscale, size=size, max_pixels=max_pixels)
    else:
        levels, facts = decode_resized(path, grayscale=grayscale, size=size, max_pixels=max_pixels)
    return to_unit(levels), facts


def attach_image_cache(dataset: Any, folder: str | Path | None) -> Any:
    """Give ``dataset`` — a reader, a ``Subset`` of one, or a reader of several sources —
    the cache in ``folder`` (``None``: none); readers that do not read through
    :func:`read_levels` (third-party ones) are left as they are. :returns: ``dataset``."""
    cache = DecodedImages(folder) if folder is not None else None
    seen: set[int] = set()
    pending = [dataset]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if offers_member(item, "dataset", "image_cache"):
            item.image_cache = cache
        for attribute in ("dataset", "datasets", "parts"):
            inner = getattr(item, attribute, None)
            if isinstance(inner, list | tuple):
                pending += list(inner)
            elif isinstance(inner, dict):
                pending += list(inner.values())
            elif inner is not None and not isinstance(inner, str | Path):
                pending.append(inner)
    return dataset
