"""DICOM reading: LUTs, windowing, MONOCHROME1, compression, colour, refusals, readers, CLI.

Every file is written here with pydicom (tiny arrays); the one real file is the SIIM-ACR
DICOM copied into ``tests/data/real/siim/`` (see ``tests/data/real/NOTICE.md``).
"""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space, get_decoder, pixel_array
from pydicom.uid import (
    MPEG2MPML,
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from typer.testing import CliRunner

from doll_core.checkpoint import ClassifierMeta, build_classifier, save_classifier
from doll_core.cli import app
from doll_core.data.chexpert_format import CHEXPERT_HEADER
from doll_core.data.dicom import is_dicom, read_dicom
from doll_core.data.imageio import ImageReadError, read_image
from doll_core.registry import get_registry

REAL_SIIM = (
    Path(__file__).parent
    / "data/real/siim/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
)
#: 12-bit test values, and what they are as a fraction of the 12-bit stored range
VALUES_12 = np.array([[0, 1, 900, 1000], [1099, 1100, 2048, 4095]], dtype=np.uint16)


def _dataset(pixels: np.ndarray, photometric: str, bits_stored: int, **elements: Any) -> Dataset:
    """A DX dataset holding ``pixels`` uncompressed, with extra ``elements`` set."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (preamble, ``DICM``, file meta)."""
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _encapsulated(path: Path, frame: bytes, syntax: UID, shape: tuple[int, int]) -> Path:
    """An 8-bit MONOCHROME2 file whose pixel data is ``frame``, encapsulated as ``syntax``."""
    ds = _dataset(np.zeros(shape, dtype=np.uint8), "MONOCHROME2", 8)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return _save(ds, path)


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _gradient(shape: tuple[int, int] = (16, 20)) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (40 + 6 * rows + 4 * cols).astype(np.uint8)


def test_8_bit_monochrome2_is_value_over_255_and_monochrome1_is_inverted(
    tmp_path: Path,
) -> None:
    pixels = np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8)
    mono2 = _save(_dataset(pixels, "MONOCHROME2", 8), tmp_path / "m2.dcm")
    mono1 = _save(_dataset(pixels, "MONOCHROME1", 8), tmp_path / "m1.dcm")
    image = read_image(mono2)
    assert image.shape == (1, 2, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], pixels / 255.0, rtol=1e-6)
    np.testing.assert_allclose(read_image(mono1)[0], 1.0 - pixels / 255.0, atol=1e-6)
    colour = read_image(mono2, grayscale=False)
    assert colour.shape == (3, 2, 3)
    np.testing.assert_array_equal(colour[0], colour[2])
    np.testing.assert_array_equal(colour[1], image[0])


def test_12_bit_values_fill_the_stored_range_and_a_rescale_is_applied(tmp_path: Path) -> None:
    # 12 bits stored in 16: the range is 0..4095, not 0..65535
    plain = _save(_dataset(VALUES_12, "MONOCHROME2", 12), tmp_path / "plain.dcm")
    np.testing.assert_allclose(read_image(plain)[0], VALUES_12 / 4095.0, rtol=1e-6)
    # the range is the stored one, not the image's own min..max; a constant image is no
    # special case (a zero slope, which leaves no range at all, is refused: see below)
    narrow = np.array([[100, 2000], [300, 300]], dtype=np.uint16)
    path = _save(_dataset(narrow, "MONOCHROME2", 12), tmp_path / "narrow.dcm")
    np.testing.assert_allclose(read_image(path)[0], narrow / 4095.0, rtol=1e-6)
    constant = np.full((3, 4), 300, dtype=np.uint16)
    path = _save(_dataset(constant, "MONOCHROME2", 12), tmp_path / "constant.dcm")
    np.testing.assert_allclose(read_image(path)[0], constant / 4095.0, rtol=1e-6)
    # a positive slope maps the stored range onto the modality range: same fractions
    # (modality 2x - 1000 in [-1000, 7190])
    scaled = _dataset(VALUES_12, "MONOCHROME2", 12, RescaleSlope=2, RescaleIntercept=-1000)
    np.testing.assert_allclose(
        read_image(_save(scaled, tmp_path / "scaled.dcm"))[0], VALUES_12 / 4095.0, rtol=1e-6
    )
    # a negative slope: low modality values are shown dark, so the image flips
    # (modality 3000 - x in [-1095, 3000]: x = 0 -> 3000 -> 1, x = 4095 -> -1095 -> 0)
    flipped = _dataset(VALUES_12, "MONOCHROME2", 12, RescaleSlope=-1, RescaleIntercept=3000)
    np.testing.assert_allclose(
        read_image(_save(flipped, tmp_path / "flipped.dcm"))[0],
        1.0 - VALUES_12 / 4095.0,
        atol=1e-6,
    )
    # signed: 12-bit two's complement, range -2048..2047
    signed = np.array([[-2048, -1], [0, 2047]], dtype=np.int16)
    path = _save(_dataset(signed, "MONOCHROME2", 12), tmp_path / "signed.dcm")
    np.testing.assert_allclose(read_image(path)[0], (signed + 2048) / 4095.0, rtol=1e-6)


def test_window_center_width_applies_to_the_rescaled_values(tmp_path: Path) -> None:
    """DICOM LINEAR windowing as pydicom implements it (PS3.3 C.11.2.1.2.1), computed by
    hand: modality m = 2x - 1000; window C = 1000, W = 401, so c = C - 0.5 = 999.5,
    w = W - 1 = 400; m <= c - w/2 = 799.5 -> 0, m > c + w/2 = 1199.5 -> 1, between
    (m - c) / w + 0.5. Only the first of several windows is used."""
    ds = _dataset(
        VALUES_12,
        "MONOCHROME2",
        12,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=[1000, 3000],
        WindowWidth=[401, 100],
    )
    expected = np.array(
        [
            [0.0, 0.0, (800 - 999.5) / 400 + 0.5, (1000 - 999.5) / 400 + 0.5],
            [(1198 - 999.5) / 400 + 0.5, 1.0, 1.0, 1.0],
        ]
    )
    assert expected[0, 2] == pytest.approx(0.00125) and expected[1, 0] == pytest.approx(0.99625)
    np.testing.assert_allclose(read_image(_save(ds, tmp_path / "w.dcm"))[0], expected, atol=1e-6)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = read_image(_save(ds, tmp_path / "w1.dcm"))[0]
    np.testing.assert_allclose(inverted, 1.0 - expected, atol=1e-6)


def test_a_voi_lut_sequence_wins_over_a_window_and_fills_its_own_range(tmp_path: Path) -> None:
    """LUT Descriptor [100 entries, first value 50, 12 bits]: x < 50 -> entry 0,
    x >= 149 -> entry 99; entries 40 * i; output range 0..4095."""
    item = Dataset()
    item.add_new(0x00283002, "US", [100, 50, 12])  # LUT Descriptor
    item.add_new(0x00283006, "US", [40 * i for i in range(100)])  # LUT Data
    pixels = np.array([[10, 60], [149, 200]], dtype=np.uint16)
    ds = _dataset(pixels, "MONOCHROME2", 12, WindowCenter=100, WindowWidth=10)
    ds.VOILUTSequence = [item]
    expected = np.array([[0, 400], [3960, 3960]]) / 4095.0
    np.testing.assert_allclose(read_image(_save(ds, tmp_path / "lut.dcm"))[0], expected, rtol=1e-6)


def test_jpeg_baseline_reads_back_as_the_jpeg_decodes(tmp_path: Path) -> None:
    pixels = _gradient()
    frame = _jpeg(pixels)
    path = _encapsulated(tmp_path / "jpeg.dcm", frame, JPEGBaseline8Bit, pixels.shape)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    image = read_image(path)
    assert image.shape == (1, 16, 20) and image.dtype == np.float32
    decoded = np.asarray(Image.open(io.BytesIO(frame)), dtype=np.float64) / 255.0
    assert np.abs(image[0] - decoded).max() <= 2 / 255  # decoders may round differently
    assert np.abs(image[0] - pixels / 255.0).max() <= 6 / 255  # JPEG at quality 90


def test_rle_lossless_is_exact(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 4096, size=(16, 20), dtype=np.uint16)
    ds = _dataset(pixels, "MONOCHROME2", 12)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    path = _save(ds, tmp_path / "rle.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_allclose(read_image(path)[0], pixels / 4095.0, rtol=1e-6)


def test_colour_dicom_is_grey_by_the_luma_rule_of_other_files(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 2] = (0, 0, 255)
    rgb[1, 0] = (10, 200, 90)
    Image.fromarray(rgb).save(tmp_path / "same.png")
    path = _save(_dataset(rgb, "RGB", 8), tmp_path / "rgb.dcm")
    np.testing.assert_allclose(read_image(path), read_image(tmp_path / "same.png"), atol=1e-6)
    np.testing.assert_allclose(read_image(path)[0, 0, 0], 0.299, rtol=1e-5)
    colour = read_image(path, grayscale=False)
    np.testing.assert_allclose(colour, rgb.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    # YBR_FULL is converted to RGB first (rounding to 8 bits both ways: a grey level or two)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ybr_path = _save(_dataset(ybr, "YBR_FULL", 8), tmp_path / "ybr.dcm")
    assert np.abs(read_image(ybr_path, grayscale=False) - colour).max() <= 3 / 255


@pytest.fixture
def jpeg_ls_without_pylibjpeg() -> Iterator[None]:
    """pydicom's JPEG-LS decoder as it is when pylibjpeg is not installed (its public
    plugin API; restored afterwards)."""
    if importlib.util.find_spec("jpeg_ls") or importlib.util.find_spec("gdcm"):
        pytest.skip("another JPEG-LS decoder (pyjpegls or gdcm) is installed")
    decoder = get_decoder(JPEGLSLossless)
    decoder.remove_plugin("pylibjpeg")
    try:
        yield
    finally:
        decoder.add_plugin("pylibjpeg", ("pydicom.pixels.decoders.pylibjpeg", "_decode_frame"))


def test_a_missing_decoder_names_the_syntax_and_what_to_install(
    tmp_path: Path, jpeg_ls_without_pylibjpeg: None
) -> None:
    frame = b"\xff\xd8\xff\xf7" + bytes(40)  # never decoded: the decoder is missing
    path = _encapsulated(tmp_path / "jls.dcm", frame, JPEGLSLossless, (4, 4))
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    reason = caught.value.reason
    assert caught.value.path == str(path)
    assert "no decoder installed for transfer syntax JPEG-LS Lossless Image Compression" in reason
    assert "(1.2.840.10008.1.2.4.80)" in reason
    assert 'pip install "doll[dicom]" (brings pylibjpeg-libjpeg)' in reason
    assert "pyjpegls" in reason


def test_a_syntax_pydicom_cannot_decode_and_corrupt_data_are_named(tmp_path: Path) -> None:
    mpeg = _encapsulated(tmp_path / "mpeg.dcm", bytes(64), MPEG2MPML, (4, 4))
    with pytest.raises(ImageReadError, match=r"MPEG2 Main Profile / Main Level \(1\.2\.840"):
        read_image(mpeg)
    junk = b"\xff\xd8" + bytes(60)
    broken = _encapsulated(tmp_path / "broken.dcm", junk, JPEGBaseline8Bit, (4, 4))
    with pytest.raises(
        ImageReadError, match=r"cannot decode its pixel data \(JPEG Baseline \(Process 1\)"
    ):
        read_image(broken)


def test_files_that_are_not_dicom_or_hold_no_single_image_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not an image at all" * 10)
    with pytest.raises(ImageReadError, match=r"corrupt.*no 'DICM' marker at byte 128") as caught:
        read_image(garbage)
    assert caught.value.path == str(garbage)
    with pytest.raises(ImageReadError, match="not a DICOM file"):
        read_dicom(garbage, grayscale=True)
    with pytest.raises(ImageReadError) as absent:
        read_image(tmp_path / "absent.dcm")
    assert absent.value.reason == "file not found"

    invalid = tmp_path / "invalid.dcm"  # an element whose value representation is "ZZ"
    invalid.write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x10\x00ZZ\x04\x00abcd")
    with pytest.raises(ImageReadError, match=r"not a valid DICOM file.*Unknown Value Repr"):
        read_image(invalid)

    whole = _save(_dataset(VALUES_12, "MONOCHROME2", 12), tmp_path / "whole.dcm").read_bytes()
    cut_in_pixels = tmp_path / "cut_in_pixels.dcm"
    cut_in_pixels.write_bytes(whole[:-4])
    with pytest.raises(ImageReadError, match=r"cannot decode.*\(12 vs 16 bytes\)"):
        read_image(cut_in_pixels)
    cut_before_pixels = tmp_path / "cut_before_pixels.dcm"
    cut_before_pixels.write_bytes(whole[: whole.rfind(b"\xe0\x7f\x10\x00")])
    with pytest.raises(ImageReadError, match=r"without pixel data.*or truncated"):
        read_image(cut_before_pixels)

    ds = _dataset(np.zeros((2, 2), dtype=np.uint8), "MONOCHROME2", 8)
    del ds.PixelData
    with pytest.raises(ImageReadError, match="without pixel data"):
        read_image(_save(ds, tmp_path / "no_pixels.dcm"))

    frames = _dataset(np.zeros((2, 4, 4), dtype=np.uint8), "MONOCHROME2", 8)
    assert frames.NumberOfFrames == 2
    with pytest.raises(ImageReadError, match="with 2 frames; only single-frame images"):
        read_image(_save(frames, tmp_path / "frames.dcm"))

    palette = _dataset(np.zeros((2, 2), dtype=np.uint8), "PALETTE COLOR", 8)
    with pytest.raises(ImageReadError, match="'PALETTE COLOR' with 1 sample"):
        read_image(_save(palette, tmp_path / "palette.dcm"))


def test_content_decides_not_the_name(tmp_path: Path) -> None:
    pixels = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    disguised = _save(_dataset(pixels, "MONOCHROME1", 8), tmp_path / "looks_like.png")
    assert is_dicom(disguised)
    np.testing.assert_allclose(read_image(disguised)[0], 1.0 - pixels / 255.0, atol=1e-6)
    png_named_dcm = tmp_path / "really_a_png.dcm"
    Image.fromarray(pixels).save(png_named_dcm, format="PNG")
    assert not is_dicom(png_named_dcm) and not is_dicom(tmp_path / "absent.dcm")
    np.testing.assert_allclose(read_image(png_named_dcm)[0], pixels / 255.0, rtol=1e-6)


def test_the_real_siim_file_reads_as_pydicom_decodes_it() -> None:
    assert REAL_SIIM.is_file()
    image = read_image(REAL_SIIM)
    assert image.shape == (1, 1024, 1024) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    # decoded by the plugin DoLL chooses (Pillow, as every JPEG file), exactly
    pillow = pixel_array(REAL_SIIM, decoding_plugin="pillow") / 255.0
    np.testing.assert_array_equal(image[0], pillow.astype(np.float32))


def test_the_jpeg_decoder_is_chosen_and_recorded() -> None:
    """Issue 29, item 10: Pillow and pylibjpeg differ by one grey level on 3% of the SIIM
    image's pixels, so DoLL picks one on purpose and records it (doll info, a run)."""
    from doll_core.data.dicom import chosen_decoder, dicom_environment
    from doll_core.experiment.runner import environment

    assert chosen_decoder(JPEGBaseline8Bit) == "pillow"
    if "pylibjpeg" in get_decoder(JPEGBaseline8Bit).available_plugins:
        other = pixel_array(REAL_SIIM, decoding_plugin="pylibjpeg").astype(np.int16)
        pillow = pixel_array(REAL_SIIM, decoding_plugin="pillow").astype(np.int16)
        differ = float((other != pillow).mean())
        assert 0.01 < differ < 0.1 and int(np.abs(other - pillow).max()) == 1
    recorded = dicom_environment()
    assert recorded["pydicom"] == pydicom.__version__
    assert recorded["JPEG Baseline (Process 1)"].startswith("pillow ")
    assert environment("cpu")["dicom"] == recorded


def test_segfolder_and_chexpert_read_dicom_images(tmp_path: Path) -> None:
    pixels = _gradient((16, 20))
    root = tmp_path / "seg"
    (root / "images").mkdir(parents=True)
    (root / "masks" / "lungs").mkdir(parents=True)
    _save(_dataset(pixels, "MONOCHROME2", 8), root / "images" / "case1.DCM")
    Image.fromarray(np.full((16, 20), 255, dtype=np.uint8)).save(root / "masks/lungs/case1.png")
    segfolder = get_registry().create("dataset", "segfolder", root=root, on_error="fail")
    assert len(segfolder) == 1
    sample = segfolder[0]
    torch.testing.assert_close(sample["image"][0], torch.from_numpy(pixels / 255.0).float())
    assert sample["mask"].shape == (1, 16, 20) and bool(sample["mask"].all())

    base = tmp_path / "CheXpert-v1.0-small"
    image = base / "train/patient00001/study1/view1_frontal.dcm"
    image.parent.mkdir(parents=True)
    _save(_dataset(pixels, "MONOCHROME1", 8), image)
    with (base / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CHEXPERT_HEADER)
        relative = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.dcm"
        writer.writerow([relative, "Female", "60", "Frontal", "AP", *(["1.0"] + [""] * 13)])
    chexpert = get_registry().create(
        "dataset", "chexpert", root=tmp_path, size=None, on_error="fail"
    )
    row = chexpert[0]
    expected = torch.from_numpy(1.0 - pixels / 255.0).float()
    torch.testing.assert_close(row["image"][0], expected)


def test_doll_explain_reads_a_dicom_image(tmp_path: Path) -> None:
    meta = ClassifierMeta(
        backbone="tiny_cnn",
        backbone_params={"width": 4},
        in_channels=1,
        image_size=32,
        mean=(0.5,),
        std=(0.25,),
    )
    torch.manual_seed(0)
    checkpoint = tmp_path / "c.pt"
    save_classifier(checkpoint, build_classifier(meta).eval(), meta)
    image = _save(_dataset(_gradient((40, 36)), "MONOCHROME2", 8), tmp_path / "cxr.dcm")
    out = tmp_path / "maps.png"
    base = ["explain", "--checkpoint", str(checkpoint), "--out", str(out)]
    chosen = ["--explainer", "saliency", "--targets", "Cardiomegaly"]
    result = CliRunner().invoke(app, [*base, "--image", str(image), *chosen])
    assert result.exit_code == 0, result.output
    with Image.open(out) as picture:
        assert picture.width > 100 and picture.height > 100
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00" * 300)
    failed = CliRunner().invoke(app, [*base, "--image", str(garbage), *chosen])
    assert failed.exit_code == 2 and "no 'DICM' marker at byte 128" in failed.stderr


def test_a_declared_size_over_the_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    """Issue 29, item 5: a DICOM header declaring 9000 x 9000 (what a 79 KB Deflate file
    can hold) is refused by the pixel limit PNGs have, before its data is touched."""
    ds = _dataset(_gradient(), "MONOCHROME2", 8)
    ds.Rows, ds.Columns = 9000, 9000  # the header lies; decoding would allocate 81 MB
    path = _save(ds, tmp_path / "bomb.dcm")
    with pytest.raises(ImageReadError, match=r"declares 9000 x 9000 = 81,000,000 pixels"):
        read_image(path)
    small = _save(_dataset(_gradient(), "MONOCHROME2", 8), tmp_path / "small.dcm")
    with pytest.raises(ImageReadError, match="over the decoding limit of 100"):
        read_image(small, max_pixels=100)
    assert read_image(small).shape == (1, 16, 20)


@pytest.mark.parametrize(("slope", "intercept"), [("nan", "0"), ("0", "0"), ("1", "inf")])
def test_a_rescale_that_makes_no_image_is_refused(
    tmp_path: Path, slope: str, intercept: str
) -> None:
    """Issue 29, item 5: Rescale Slope nan or 0 (or an infinite intercept) used to give a
    NaN or constant image that counted as readable."""
    with pydicom.config.disable_value_validation():
        ds = _dataset(VALUES_12, "MONOCHROME2", 12, RescaleSlope=slope, RescaleIntercept=intercept)
        path = _save(ds, tmp_path / "rescaled.dcm")
    with pytest.raises(ImageReadError, match="would make every pixel"):
        read_image(path)
