"""Image and mask reading for every dataset reader, and the JSRT ``.IMG`` format.

Images come back as ``float32 [C, H, W]`` in ``[0, 1]``; masks as ``bool [H, W]``. A
file's format is what its content says (Pillow reads the file's signature), whatever its
name: a PNG behind a ``.jpg`` name reads as the PNG it is. Any failure to read raises
:class:`ImageReadError` with the path and the reason, which the readers turn into a skip
record or a user error per ``on_error``.

One rule makes every image one grey channel (:func:`pil_to_array`): a palette (``P``) is
looked up; 16-bit values (``I;16``) are divided by 65535 and 8-bit ones by 255; colour
(``RGB``, and the colour of ``RGBA``) becomes ITU-R 601 luma, ``0.299 R + 0.587 G +
0.114 B``, computed in float before any rounding; an opacity channel (``LA``, ``RGBA``)
is left out, since a radiograph's pixels are what it stores, not what it would show over
a background. Burned-in colour annotations (arrows, text) therefore become grey like the
rest; :class:`ImageFacts` counts their pixels so that ``doll data inspect`` can say which
files carry them.
DICOM files (by content, whatever their name) are read by :mod:`doll_core.data.dicom`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops, UnidentifiedImageError
from torch.nn import functional

from doll_core.errors import DollError

#: ITU-R 601 luma, the weights PIL's ``convert("L")`` uses: every colour file's grey.
LUMA_601 = (0.299, 0.587, 0.114)
#: File names that say DICOM (the content decides: :func:`doll_core.data.dicom.is_dicom`).
DICOM_SUFFIXES = (".dcm", ".dicom")
#: What the readers list as images; a file's content, not its name, decides how it is read.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", *DICOM_SUFFIXES)

#: JSRT: headerless 2048 x 2048 big-endian unsigned 16-bit pixels holding 12-bit values,
#: where high values are dark (film density).
JSRT_SHAPE = (2048, 2048)
JSRT_MAX_VALUE = 4095

#: The most pixels a file may declare before it is decoded: a chest radiograph has at most
#: about 4,300 x 4,300 (18 M); 64 M leaves room for any scan while a "decompression bomb"
#: (a small file that declares billions of pixels) is a bad image like any other. The
#: readers take ``max_image_pixels`` to change it. DoLL applies this limit itself, so
#: Pillow's own (whose error the readers would not catch) is off.
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(DollError):
    """A file that could not be read as an image; ``path`` and ``reason`` say which, why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")


#: A pixel whose channels spread more than this (max - min, on the [0, 1] scale) is
#: coloured: burned-in annotation rather than a tinted grey (JPEG leaves spreads of ~0.05).
COLOUR_SPREAD = 0.15


@dataclass(frozen=True)
class ImageFacts:
    """What a file was, before it became ``float32 [C, H, W]``: its ``format`` (by
    content), PIL ``mode``, native ``size`` ``(H, W)`` (before any JPEG draft scaling),
    and for colour files the fraction of coloured pixels (:data:`COLOUR_SPREAD`)."""

    format: str
    mode: str
    size: tuple[int, int]
    colour_fraction: float | None = None


def check_declared_pixels(
    path: Path, height: int, width: int, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> None:
    """Refuse a file whose header declares more than ``max_pixels`` pixels (or a size
    that is not positive), before anything is decoded or allocated.

    :raises ImageReadError: naming the declared size and the limit.
    """
    if height <= 0 or width <= 0:
        raise ImageReadError(path, f"it declares a size of {height} x {width} pixels")
    pixels = height * width
    if max_pixels is not None and pixels > max_pixels:
        raise ImageReadError(
            path,
            f"it declares {width} x {height} = {pixels:,} pixels, over the decoding limit "
            f"of {max_pixels:,} (a decompression bomb, or a file too large to decode "
            "safely; the reader option max_image_pixels raises the limit)",
        )


def _open_fully(
    path: Path,
    draft: tuple[str, tuple[int, int]] | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> tuple[Image.Image, ImageFacts]:
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    try:
        with Image.open(path) as handle:
            facts = ImageFacts(
                str(handle.format), handle.mode, (int(handle.height), int(handle.width))
            )
            check_declared_pixels(path, int(handle.height), int(handle.width), max_pixels)
            if draft is not None and handle.format == "JPEG":
                # decode a JPEG at the smallest DCT scale that is still >= the target size
                handle.draft(*draft)
            handle.load()  # decode now: a truncated file fails here, not later
            return handle.copy(), facts
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt or unsupported image ({exc})") from None


def pil_to_array(image: Image.Image, *, grayscale: bool) -> np.ndarray:
    """A PIL image as ``float32 [C, H, W]`` in ``[0, 1]`` (C = 1 if ``grayscale`` else 3),
    by the module's one rule (opacity left out, colour to ITU-R 601 luma in float); ``I``
    (32-bit) files are scaled by 65535 when a value exceeds 255, else by 255; ``F`` files
    are taken as they are."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0
        channels = values[None]
    elif image.mode == "I":
        raw = np.asarray(image, dtype=np.int64)
        scale = 65535.0 if raw.max(initial=0) > 255 else 255.0
        channels = np.clip(raw, 0, None).astype(np.float32)[None] / scale
    elif image.mode == "F":
        channels = np.asarray(image, dtype=np.float32)[None]
    else:
        if image.mode == "LA":
            image = image.getchannel("L")
        elif image.mode not in ("L", "RGB"):
            image = image.convert("RGB" if image.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
        values = np.asarray(image, dtype=np.float32) / 255.0
        channels = values[None] if values.ndim == 2 else values.transpose(2, 0, 1)
    return as_channels(channels, grayscale=grayscale)


def as_channels(channels: np.ndarray, *, grayscale: bool) -> np.ndarray:
    """``float32 [1 or 3, H, W]`` -> ``[1, H, W]`` (:data:`LUMA_601`) if ``grayscale``,
    else ``[3, H, W]`` (grey repeated)."""
    if grayscale and channels.shape[0] == 3:
        weights = np.array(LUMA_601, dtype=np.float32)[:, None, None]
        channels = (channels * weights).sum(axis=0, keepdims=True)
    elif not grayscale and channels.shape[0] == 1:
        channels = np.repeat(channels, 3, axis=0)
    return np.ascontiguousarray(channels, dtype=np.float32)


def read_image(
    path: str | Path,
    *,
    grayscale: bool = True,
    at_least: tuple[int, int] | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Read an image file as ``float32 [C, H, W]`` in ``[0, 1]``.

    A DICOM file (by content: :func:`doll_core.data.dicom.is_dicom`) is read by the rules
    of :mod:`doll_core.data.dicom`; ``at_least`` does not apply to it.

    :param at_least: ``(H, W)`` the caller will resize to; a JPEG is then decoded at a
        reduced scale that is still at least that large (much faster for big files).
    :param max_pixels: a file that declares more pixels is refused before it is decoded
        (:class:`ImageReadError`); ``None``: no limit.
    """
    from doll_core.data import dicom  # imported here: that module imports this one

    if dicom.is_dicom(path):
        return dicom.read_dicom(path, grayscale=grayscale, max_pixels=max_pixels)
    image, _ = _open_image(Path(path), grayscale, at_least, max_pixels)
    return pil_to_array(image, grayscale=grayscale)


def read_image_and_facts(
    path: str | Path,
    *,
    grayscale: bool = True,
    at_least: tuple[int, int] | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> tuple[np.ndarray, ImageFacts]:
    """:func:`read_image`, and the :class:`ImageFacts` of the file (counting coloured
    pixels costs a pass over a colour file)."""
    from doll_core.data import dicom

    if dicom.is_dicom(path):
        array = dicom.read_dicom(path, grayscale=grayscale, max_pixels=max_pixels)
        return array, ImageFacts("DICOM", "", (int(array.shape[-2]), int(array.shape[-1])))
    image, facts = _open_image(Path(path), grayscale, at_least, max_pixels)
    if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        fraction = _coloured_fraction(image if image.mode == "RGB" else image.convert("RGB"))
        facts = ImageFacts(facts.format, facts.mode, facts.size, round(fraction, 6))
    return pil_to_array(image, grayscale=grayscale), facts


def _coloured_fraction(rgb: Image.Image) -> float:
    """The fraction of pixels whose channels spread more than :data:`COLOUR_SPREAD`: the
    spread (max - min) is the largest of the three channel differences, all in Pillow's
    8-bit operations (no wider copy of the image)."""
    red, green, blue = rgb.split()
    spread = ImageChops.lighter(
        ImageChops.lighter(ImageChops.difference(red, green), ImageChops.difference(green, blue)),
        ImageChops.difference(red, blue),
    )
    histogram = spread.histogram()
    pixels = sum(histogram)
    coloured = sum(histogram[math.floor(COLOUR_SPREAD * 255) + 1 :])
    return coloured / pixels if pixels else 0.0


def _open_image(
    path: Path,
    grayscale: bool,
    at_least: tuple[int, int] | None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> tuple[Image.Image, ImageFacts]:
    """A file that is not DICOM, opened (drafted to ``at_least`` if a JPEG)."""
    from doll_core.data import dicom

    draft = None
    if at_least is not None:
        draft = ("L" if grayscale else "RGB", (at_least[1], at_least[0]))
    try:
        return _open_fully(path, draft, max_pixels)
    except ImageReadError as exc:
        raise dicom.not_dicom_either(exc) from None


def read_mask(path: str | Path) -> np.ndarray:
    """Read a binary mask file as ``bool [H, W]``: any non-zero pixel is foreground.

    A pixel's value is what it shows, not how it is stored: palette files (GIF, ``P``
    PNGs) are read through their palette (index 0 may well be white), colour pixels are
    foreground when any channel is non-zero, and a fully transparent pixel is background.
    Two common encodings show nothing and are read by what they store instead: a palette
    file whose indices run past its palette, or whose shown image is empty while its
    indices are not (the foreground index made transparent), is read by index; an image
    whose colour is all black and whose opacity draws the shape is read by opacity.
    """
    return mask_from_image(open_mask_file(Path(path)))


def open_mask_file(path: Path) -> Image.Image:
    """A mask file, opened and decoded (:class:`ImageReadError` when it cannot be)."""
    return _open_fully(path)[0]


def mask_from_image(image: Image.Image) -> np.ndarray:
    """:func:`read_mask`'s reading of an opened file: ``bool [H, W]``."""
    indices = np.asarray(image) if image.mode == "P" else None
    if indices is not None:
        colours = len(image.getpalette() or []) // 3
        if indices.size and int(indices.max()) >= colours:
            return indices > 0
    if image.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "RGB", "LA"):
        image = image.convert("RGBA")  # palette, CMYK, YCbCr, ...: what the pixels show
    values = np.asarray(image)
    if image.mode in ("LA", "RGBA"):  # the last channel is opacity, not colour
        colour, opaque = values[..., :-1].max(axis=2) > 0, values[..., -1] > 0
        if not colour.any() and opaque.any() and not opaque.all():
            shown = opaque  # black shapes drawn by their opacity
        else:
            shown = colour & opaque
    else:
        shown = (values.max(axis=2) if values.ndim == 3 else values) > 0
    if indices is not None and not shown.any() and bool((indices > 0).any()):
        return indices > 0
    return shown


def read_jsrt_img(path: str | Path, shape: tuple[int, int] = JSRT_SHAPE) -> np.ndarray:
    """Read a raw JSRT ``.IMG`` file exactly: ``uint16 [H, W]`` as stored (12-bit values,
    high = dark)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    expected = shape[0] * shape[1] * 2
    size = path.stat().st_size
    if size != expected:
        raise ImageReadError(
            path,
            f"a {shape[0]}x{shape[1]} JSRT image has {expected} bytes, this file has {size}",
        )
    return np.fromfile(path, dtype=">u2").reshape(shape).astype(np.uint16)


def jsrt_to_display(raw: np.ndarray) -> np.ndarray:
    """Raw JSRT values -> ``float32 [1, H, W]`` in ``[0, 1]``, inverted so bone is bright."""
    clipped = np.clip(raw.astype(np.float32), 0, JSRT_MAX_VALUE)
    return (1.0 - clipped / JSRT_MAX_VALUE)[None]


def write_jsrt_img(path: str | Path, raw: np.ndarray) -> None:
    """Write ``uint16 [H, W]`` 12-bit values as a headerless big-endian ``.IMG`` file."""
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError("JSRT images are 2-D uint16 arrays")
    if int(raw.max(initial=0)) > JSRT_MAX_VALUE:
        raise ValueError("JSRT images hold 12-bit values (at most 4095)")
    raw.astype(">u2").tofile(path)


def resize_image(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize ``[C, H, W]`` to ``size = (H', W')`` (bilinear, anti-aliased); ``None`` keeps it."""
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image
    resized = functional.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]
    return resized.clamp_(0.0, 1.0)


def resize_mask(mask: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize ``[K, H, W]`` masks to ``size`` with nearest-neighbour; ``None`` keeps them."""
    if size is None or tuple(mask.shape[-2:]) == tuple(size):
        return mask
    resized = functional.interpolate(mask[None].float(), size=size, mode="nearest-exact")[0]
    return resized.to(mask.dtype)
