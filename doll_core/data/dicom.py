"""DICOM images for :func:`~doll_core.data.imageio.read_image`: ``float32 [C, H, W]`` in
``[0, 1]``, decoded with pydicom (compressed transfer syntaxes through Pillow or pylibjpeg).

A file is DICOM when it carries the ``DICM`` marker at byte 128 (:func:`is_dicom`), whatever
its name. Grey images (MONOCHROME1/2) go through the file's own transforms, in float64:

1. the modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence),
2. the VOI transform, first item: a VOI LUT Sequence if there is one, else the first Window
   Center/Width (with the file's VOI LUT Function), else none,
3. **one scaling rule**: a value is placed linearly in the *output range of the last
   transform*, low end -> 0, high end -> 1 (then clipped to ``[0, 1]``). That range is what
   the transform can produce, not what this image happens to hold: a VOI LUT gives
   ``0 .. 2**n - 1`` (n its bits per entry); a window gives pydicom's windowing range (below
   the window -> 0, above -> 1); without VOI, the range the modality values can take: the
   stored range (Bits Stored, Pixel Representation) through Rescale Slope/Intercept, or
   ``0 .. 2**n - 1`` of a Modality LUT. So one stored value gives one grey in every image of
   a dataset, as for PNGs (/255, /65535) and JSRT (/4095) elsewhere in DoLL: no image
   statistics, no division by a constant image's zero spread, and an 8-bit file reads
   exactly as ``value / 255``. (A positive Rescale Slope alone therefore changes nothing;
   a negative one flips the image, since low modality values are shown dark.)
4. MONOCHROME1 is inverted (``1 - v``), so that bright = dense, as MONOCHROME2.

Colour images (RGB, YBR_FULL, YBR_FULL_422 converted to RGB by pydicom; YBR_ICT/RCT by the
JPEG 2000 decoder) are scaled by their stored range ``0 .. 2**BitsStored - 1`` (DICOM's
LUTs are for grey images) and, for ``grayscale=True``, made grey with the ITU-R 601 luma
weights :func:`~doll_core.data.imageio.pil_to_array` uses. Multi-frame files are refused
(which frame is the radiograph is not ours to guess). Every failure, including a transfer
syntax with no decoder installed, is an :class:`ImageReadError`.

Compressed pixel data is decoded by a plugin chosen on purpose, not by pydicom's order of
discovery (Pillow and pylibjpeg differ by one grey level on 3% of a JPEG Baseline image's
pixels): the first of :data:`DECODER_PREFERENCE` that can decode the transfer syntax, so
Pillow, which decodes every other JPEG file DoLL reads, decodes JPEG Baseline and JPEG
2000, and pylibjpeg what Pillow cannot (JPEG Lossless, JPEG-LS). :func:`dicom_environment`
names the versions; ``doll info`` and every run's ``environment`` record them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom import uid as dicom_uid
from pydicom.dataset import Dataset
from pydicom.pixels import (
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    get_decoder,
    pixel_array,
)

from doll_core.data.imageio import (
    DICOM_SUFFIXES,
    MAX_IMAGE_PIXELS,
    ImageReadError,
    as_channels,
    check_declared_pixels,
)

#: The marker of a DICOM file (PS3.10 7.1): a 128-byte preamble, then these four bytes.
DICOM_MAGIC = b"DICM"
DICOM_MAGIC_OFFSET = 128
#: The install that brings the decoders of compressed transfer syntaxes (pylibjpeg).
DICOM_EXTRA = 'pip install "doll[dicom]"'

GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
#: The ``doll[dicom]`` package that decodes each compressed transfer syntax.
_EXTRA_DECODER = {
    **dict.fromkeys(
        [*dicom_uid.JPEGTransferSyntaxes, *dicom_uid.JPEGLSTransferSyntaxes],
        "pylibjpeg-libjpeg",
    ),
    **dict.fromkeys(dicom_uid.JPEG2000TransferSyntaxes, "pylibjpeg-openjpeg"),
}

_NOT_DICOM = f"not a DICOM file (no {DICOM_MAGIC.decode()!r} marker at byte {DICOM_MAGIC_OFFSET})"

VoiKind = Literal["lut", "window", "none"]

#: pydicom's decoding plugins in the order DoLL picks them (module docstring).
DECODER_PREFERENCE = ("pillow", "pylibjpeg", "pydicom", "gdcm")


def chosen_decoder(syntax: dicom_uid.UID) -> str:
    """The pydicom plugin DoLL decodes ``syntax`` with: the first of
    :data:`DECODER_PREFERENCE` installed for it, or ``""`` (native data: no plugin)."""
    available = get_decoder(syntax).available_plugins
    for name in DECODER_PREFERENCE:
        if name in available:
            return name
    return available[0] if available else ""


def dicom_environment() -> dict[str, str]:
    """pydicom's version and the decoder of each compressed syntax DoLL reads, with the
    decoding package's version: what a run records, since pixel values depend on it."""
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    packages = {"pillow": "pillow", "pylibjpeg": "pylibjpeg-libjpeg", "gdcm": "python-gdcm"}
    found = {"pydicom": pydicom.__version__}
    for syntax in (dicom_uid.JPEGBaseline8Bit, dicom_uid.JPEGLosslessSV1, dicom_uid.JPEGLSLossless,
                   dicom_uid.JPEG2000Lossless):  # fmt: skip
        try:
            plugin = chosen_decoder(syntax)
        except NotImplementedError:
            plugin = ""
        package = packages.get(plugin)
        found[syntax.name] = f"{plugin} {version(package)}" if package else plugin or "none"
    return found


def is_dicom(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM file by its content: ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as handle:
            handle.seek(DICOM_MAGIC_OFFSET)
            return handle.read(len(DICOM_MAGIC)) == DICOM_MAGIC
    except OSError:
        return False


def read_dicom(
    path: str | Path, *, grayscale: bool, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Read a DICOM image as ``float32 [C, H, W]`` in ``[0, 1]`` by the module's rules;
    C = 1 if ``grayscale`` else 3 (grey repeated, or the RGB channels).

    :param max_pixels: a file whose Rows x Columns is larger is refused before its pixel
        data is decoded (a small Deflate or JPEG file can declare gigabytes); ``None``: no
        limit.
    :raises ImageReadError: not DICOM, no pixel data, too many pixels, several frames, an
        unsupported photometric interpretation, a transfer syntax without an installed
        decoder (named, with the package to install), a Rescale Slope or Intercept that is
        not a finite number (or a slope of 0, which makes every pixel one grey), or data
        that fails to decode.
    """
    path = Path(path)
    ds = _load(path)
    rows, columns = _guarded(path, "no image size", lambda: (int(ds.Rows), int(ds.Columns)))
    check_declared_pixels(path, rows, columns, max_pixels)
    _check_rescale(path, ds)
    stored = _decode(path, ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = 1 if stored.ndim == 2 else stored.shape[-1]
    if photometric in GREY and samples == 1:
        channels = _guarded(path, "cannot apply its LUTs", lambda: _grey(ds, stored))[None]
    elif photometric in COLOUR and samples == 3:
        channels = _guarded(path, "cannot scale its colours", lambda: _colour(ds, stored))
    else:
        raise ImageReadError(
            path,
            f"photometric interpretation {photometric or '(none)'!r} with {samples} "
            f"sample(s) per pixel is not read; DICOM images must be grey ({', '.join(GREY)}, "
            f"1 sample) or colour ({', '.join(COLOUR)}, 3 samples)",
        )
    return as_channels(channels, grayscale=grayscale)


def _check_rescale(path: Path, ds: Dataset) -> None:
    """Refuse a Rescale Slope or Intercept that would make the image NaN or one grey."""
    for key in ("RescaleSlope", "RescaleIntercept"):
        if ds.get(key) is None:
            continue
        value = _guarded(path, f"its {key} is not a number", partial(float, ds[key].value))
        if not np.isfinite(value) or (key == "RescaleSlope" and value == 0):
            raise ImageReadError(
                path,
                f"its {key} is {value}, which would make every pixel "
                + ("one grey" if value == 0 else "undefined")
                + ": the file's header is damaged",
            )


def not_dicom_either(error: ImageReadError) -> ImageReadError:
    """``error`` (Pillow could not read the file), saying also that a file named as DICOM
    is not DICOM by its content."""
    path = Path(error.path)
    if path.suffix.lower() not in DICOM_SUFFIXES or not path.is_file():
        return error
    return ImageReadError(error.path, f"{error.reason}; and {_NOT_DICOM}")


def _guarded(path: Path, what: str, step: Callable[[], Any]) -> Any:
    """``step()``, with any pydicom failure turned into an :class:`ImageReadError`."""
    try:
        return step()
    except ImageReadError:
        raise
    except Exception as exc:  # pydicom raises many kinds; none may escape as a traceback
        raise ImageReadError(path, f"{what} ({type(exc).__name__}: {exc})") from None


def _load(path: Path) -> Dataset:
    """The dataset of a DICOM file, checked to hold pixel data."""
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    if not is_dicom(path):
        raise ImageReadError(path, _NOT_DICOM)
    ds = _guarded(path, "not a valid DICOM file", lambda: pydicom.dcmread(path))
    if "PixelData" not in ds:
        raise ImageReadError(
            path, "DICOM file without pixel data (7FE0,0010): not an image, or truncated"
        )
    if "TransferSyntaxUID" not in ds.file_meta:
        raise ImageReadError(path, "DICOM file without a transfer syntax (0002,0010)")
    return ds


def _decode(path: Path, ds: Dataset) -> np.ndarray:
    """The stored pixel values of a single-frame dataset: ``[H, W]`` or ``[H, W, 3]``."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(
            path,
            f"DICOM file with {frames} frames; only single-frame images are read "
            "(save the frame you want as its own file)",
        )
    syntax = dicom_uid.UID(ds.file_meta.TransferSyntaxUID)
    _require_decoder(path, syntax)
    what = f"cannot decode its pixel data ({syntax.name}, {syntax})"
    plugin = chosen_decoder(syntax)
    return np.asarray(_guarded(path, what, lambda: pixel_array(ds, decoding_plugin=plugin)))


def _require_decoder(path: Path, syntax: dicom_uid.UID) -> None:
    """Refuse a transfer syntax that no installed decoder handles, saying what to install."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageReadError(
            path,
            f"transfer syntax {syntax.name} ({syntax}) has no decoder in pydicom; convert "
            "the file to an uncompressed transfer syntax (e.g. with dcmtk's dcmdjpeg)",
        ) from None
    if decoder.is_available:
        return
    package = _EXTRA_DECODER.get(syntax)
    hint = f"{DICOM_EXTRA} (brings {package})" if package else "a decoder pydicom supports"
    others = "; ".join(decoder.missing_dependencies)
    raise ImageReadError(
        path,
        f"no decoder installed for transfer syntax {syntax.name} ({syntax}); install "
        f"{hint}" + (f", or one of: {others}" if others else ""),
    )


def _grey(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Stored grey values ``[H, W]`` -> ``float32 [H, W]`` in ``[0, 1]``, bright = dense."""
    values = apply_modality_lut(stored, ds)
    kind = _voi_kind(ds)
    if kind == "lut":
        # a VOI LUT is indexed by integer modality values
        values = apply_voi(np.rint(values).astype(np.int64), ds)
    elif kind == "window":
        values = apply_windowing(values, ds)
    unit = _to_unit(np.asarray(values, dtype=np.float64), _output_range(ds, kind))
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        unit = 1.0 - unit
    return unit.astype(np.float32)


def _voi_kind(ds: Dataset) -> VoiKind:
    """Which VOI transform applies, with pydicom's ``apply_voi_lut`` preference: a complete
    VOI LUT Sequence item, else a Window Center and Width, else none."""
    items = ds.get("VOILUTSequence")
    if items and "LUTDescriptor" in items[0] and "LUTData" in items[0]:
        return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return "none"


def _output_range(ds: Dataset, kind: VoiKind) -> tuple[float, float]:
    """``(low, high)``: what the last transform maps to 0 and to 1 (module docstring)."""
    if kind == "lut":
        return 0.0, float(2 ** _lut_bits(ds.VOILUTSequence[0]) - 1)
    if kind == "window":  # the windowing's ends: what it gives below and above the window
        low, high = apply_windowing(np.array([-np.inf, np.inf]), ds)
        return float(low), float(high)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** _lut_bits(ds.ModalityLUTSequence[0]) - 1)
    ends = apply_modality_lut(np.array(_stored_range(ds), dtype=np.float64), ds)
    return float(ends.min()), float(ends.max())


def _lut_bits(item: Dataset) -> int:
    """Bits per entry of a LUT (the third value of its LUT Descriptor)."""
    return int(item.LUTDescriptor[2])


def _stored_range(ds: Dataset) -> tuple[int, int]:
    """The values Bits Stored and Pixel Representation allow: unsigned or two's complement."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _to_unit(values: np.ndarray, ends: tuple[float, float]) -> np.ndarray:
    """``values`` placed linearly from ``ends[0]`` (-> 0) to ``ends[1]`` (-> 1), clipped;
    a degenerate range (equal ends) gives zeros."""
    low, high = ends
    if high == low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _colour(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Stored RGB ``[H, W, 3]`` -> ``float32 [3, H, W]`` in ``[0, 1]`` (stored range)."""
    scaled = _to_unit(stored.astype(np.float64), (0.0, float(2 ** int(ds.BitsStored) - 1)))
    return scaled.transpose(2, 0, 1).astype(np.float32)
