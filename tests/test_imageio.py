"""Image, mask and JSRT reading: bit depths, colour, exact raw round trips, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from doll_core.data.imageio import (
    ImageReadError,
    jsrt_to_display,
    read_image,
    read_jsrt_img,
    read_mask,
    resize_mask,
    write_jsrt_img,
)


def test_8_bit_16_bit_and_rgb_files(tmp_path: Path) -> None:
    grey8 = np.array([[0, 51], [204, 255]], dtype=np.uint8)
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    np.testing.assert_allclose(read_image(tmp_path / "g8.png")[0], grey8 / 255.0, rtol=1e-6)

    grey16 = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(read_image(tmp_path / "g16.png")[0], grey16 / 65535.0, rtol=1e-6)

    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    grey = read_image(tmp_path / "c.png")
    assert grey.shape == (1, 2, 2)
    np.testing.assert_allclose(grey[0, 0, 0], 0.299, rtol=1e-5)  # ITU-R 601 luma of red
    np.testing.assert_allclose(grey[0, 1, 1], 0.114, rtol=1e-5)
    colour = read_image(tmp_path / "c.png", grayscale=False)
    assert colour.shape == (3, 2, 2) and colour[0, 0, 0] == 1.0 and colour[2, 1, 1] == 1.0
    assert read_image(tmp_path / "g8.png", grayscale=False).shape == (3, 2, 2)


def test_a_2048_jsrt_image_reads_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4096, size=(2048, 2048), dtype=np.uint16)
    path = tmp_path / "JPCLN001.IMG"
    write_jsrt_img(path, raw)
    assert path.stat().st_size == 2048 * 2048 * 2
    assert path.read_bytes()[:2] == int(raw[0, 0]).to_bytes(2, "big")  # big-endian on disk
    back = read_jsrt_img(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, raw)
    display = jsrt_to_display(back[:2, :2])
    np.testing.assert_allclose(display[0], 1.0 - raw[:2, :2] / 4095.0, rtol=1e-6)


def test_a_jsrt_file_of_the_wrong_size_is_named(tmp_path: Path) -> None:
    path = tmp_path / "short.IMG"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ImageReadError, match=r"short\.IMG.*has 8388608 bytes, this file has 100"):
        read_jsrt_img(path)


def test_corrupt_and_missing_files_raise_with_path_and_reason(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(np.full((64, 64), 128, dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    for path in (truncated, garbage):
        with pytest.raises(ImageReadError) as caught:
            read_image(path)
        assert caught.value.path == str(path)
        assert "corrupt" in caught.value.reason
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "absent.png")


def test_masks_are_binary_and_stay_binary_when_resized(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 3:7] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    read = read_mask(tmp_path / "m.png")
    assert read.dtype == bool and read.sum() == 16
    big = resize_mask(torch.from_numpy(read[None].astype(np.float32)), (16, 16))
    assert set(big.unique().tolist()) == {0.0, 1.0}
    assert big.sum() == 64


def _mask_files(folder: Path, shape: np.ndarray) -> dict[str, Path]:
    """The same 0/1 shape in encodings real mask files use."""
    files = {}
    files["L 0/255"] = folder / "grey.png"
    Image.fromarray(shape * 255, "L").save(files["L 0/255"])
    files["P, indices past a 1-colour palette"] = folder / "short-palette.png"
    Image.fromarray(shape, "P").save(files["P, indices past a 1-colour palette"])
    files["GIF, foreground index transparent"] = folder / "transparent.gif"
    Image.fromarray(shape, "L").convert("P").save(
        files["GIF, foreground index transparent"], transparency=1
    )
    files["black shape drawn by opacity"] = folder / "alpha.png"
    rgba = np.zeros((*shape.shape, 4), np.uint8)
    rgba[..., 3] = shape * 255
    Image.fromarray(rgba, "RGBA").save(files["black shape drawn by opacity"])
    files["palette with index 0 white"] = folder / "white-zero.png"
    inverted = Image.fromarray(1 - shape, "P")
    inverted.putpalette([255, 255, 255, 0, 0, 0])
    inverted.save(files["palette with index 0 white"])
    return files


def test_masks_read_by_what_they_show_or_by_what_they_store(tmp_path: Path) -> None:
    shape = np.zeros((20, 24), np.uint8)
    shape[4:12, 6:18] = 1
    for encoding, path in _mask_files(tmp_path, shape).items():
        mask = read_mask(path)
        assert mask.dtype == bool and int(mask.sum()) == int(shape.sum()), encoding
        assert bool((mask == shape.astype(bool)).all()), encoding
