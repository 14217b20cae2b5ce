"""Localization ground truth: CheXlocalize (polygons, RLE), NIH boxes, COCO, names, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from doll_core.errors import DollError
from doll_core.groundtruth import observation_name, parse_spec, read_ground_truth
from doll_core.groundtruth.boxes import box_bounds
from doll_core.groundtruth.names import CHEXLOCALIZE_OBSERVATIONS, chexlocalize_name
from doll_core.groundtruth.nih import NIH_SIZE
from doll_core.groundtruth.rle import decode_rle, encode_mask, string_counts

REAL = Path(__file__).parent / "data" / "real"
CHEXLOCALIZE = REAL / "chexlocalize"
IMAGE = "patient64541_study1_view1_frontal"


def _write(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def test_both_chexlocalize_formats_give_the_same_masks() -> None:
    polygons = read_ground_truth(f"chexlocalize:{CHEXLOCALIZE / 'gt_annotations_val.json'}")
    rle = read_ground_truth(f"chexlocalize:{CHEXLOCALIZE / 'gt_segmentations_val.json'}")
    assert (polygons.form, rle.form) == ("polygons", "rle")
    assert polygons.ids == rle.ids == [IMAGE]
    assert polygons.size(IMAGE) == rle.size(IMAGE) == (2320, 2828)  # [H, W] of a 2828x2320 JPEG
    assert polygons.covered == rle.covered == CHEXLOCALIZE_OBSERVATIONS
    # CheXlocalize made its RLE ground truth from these polygons with its own code: the
    # masks agree pixel for pixel (measured: 0 of 6,560,960 pixels differ for each task)
    for observation in CHEXLOCALIZE_OBSERVATIONS:
        assert np.array_equal(polygons.mask(IMAGE, observation), rle.mask(IMAGE, observation))
    assert polygons.positives(IMAGE) == [
        "Enlarged Cardiomediastinum",
        "Cardiomegaly",
        "Lung Opacity",
    ]
    assert rle.positives(IMAGE) == polygons.positives(IMAGE)
    assert int(rle.mask(IMAGE, "Lung Opacity").sum()) == 163040  # "Airspace Opacity" there


def test_rle_counts_are_read_and_written_as_pycocotools_and_chexlocalize_do() -> None:
    raw = json.loads((CHEXLOCALIZE / "gt_segmentations_val.json").read_text())[IMAGE]
    item = raw["Cardiomegaly"]
    runs = string_counts(item["counts"], "test")
    assert sum(runs) == 2320 * 2828 and sum(runs[1::2]) == coco_mask.area(item)
    decoded = decode_rle(item, "test")
    assert np.array_equal(decoded, coco_mask.decode(item).astype(bool))
    assert encode_mask(decoded) == item  # CheXlocalize's encode_segmentation, byte for byte
    uncompressed = {"size": item["size"], "counts": runs}
    assert np.array_equal(decode_rle(uncompressed, "test"), decoded)


def test_names_map_to_the_fourteen_observations() -> None:
    assert observation_name("Airspace Opacity") == "Lung Opacity"
    assert chexlocalize_name("Lung Opacity") == "Airspace Opacity"
    assert observation_name("Effusion") == "Pleural Effusion"
    assert observation_name("Infiltrate") == observation_name("Infiltration") == "Lung Opacity"
    assert observation_name("Mass") == observation_name("Nodule") == "Lung Lesion"
    assert observation_name("Pleural_Thickening") == "Pleural Other"
    assert observation_name("pleural effusion") == "Pleural Effusion"
    assert observation_name(" Hernia ") == "Hernia"  # no CheXpert counterpart: its own name


def test_nih_boxes_follow_the_pixel_centre_rule() -> None:
    truth = read_ground_truth(f"nih-bbox:{REAL / 'nih-bbox' / 'BBox_List_2017.csv'}")
    assert len(truth) == 6 and truth.form == "boxes"
    assert set(truth.covered) == {"Cardiomegaly", "Pneumonia", "Atelectasis", "Lung Lesion"}
    # the row: 00001369_000.png,Cardiomegaly,336.998941798942,276.31746031746,
    # 553.718518518519,386.844444444444 (x, y, w, h)
    # columns c with 336.9989 <= c + 0.5 < 890.7175: 337 .. 890; rows r with
    # 276.3175 <= r + 0.5 < 663.1619: 276 .. 662
    mask = truth.mask("00001369_000.png", "Cardiomegaly")
    assert mask.shape == NIH_SIZE
    rows, columns = np.nonzero(mask)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (276, 662, 337, 890)
    assert int(mask.sum()) == (662 - 276 + 1) * (890 - 337 + 1)
    assert truth.annotated("00008386_000.png") == ["Lung Lesion"]  # a Nodule
    assert not truth.mask("00008386_000.png", "Cardiomegaly").any()  # covered, absent


def test_nih_csv_variants_and_errors(tmp_path: Path) -> None:
    header = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
    good = tmp_path / "bbox.csv"
    good.write_text(header + "a.png,Infiltrate,10.4,20.6,5,5,,,\n\nb.png,Mass,0,0,2000,3,,,\n")
    truth = read_ground_truth(f"nih-bbox:{good}")
    assert truth.annotated("a.png") == ["Lung Opacity"]
    assert box_bounds((10.4, 20.6, 5, 5), NIH_SIZE) == (21, 26, 10, 15)
    assert int(truth.mask("b.png", "Lung Lesion").sum()) == 3 * 1024  # clipped to the image
    for text, message in [
        ("Path,Label\n", "not NIH's BBox_List_2017.csv"),
        (header + "a.png,Mass,1,2,3\n", "line 2: expected 'image,finding,x,y,w,h'"),
        (header + "a.png,Mass,1,2,x,4\n", "line 2: box"),
        (header + "a.png,Mass,1,2,-3,4\n", "w, h >= 0"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(DollError, match=message):
            read_ground_truth(f"nih-bbox:{bad}")


def _coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 1, "file_name": "one.png", "height": 6, "width": 8},
            {"id": 2, "file_name": "two.png", "height": 4, "width": 4},
        ],
        "categories": [
            {"id": 1, "name": "Effusion"},
            {"id": 2, "name": "Hernia"},
            {"id": 3, "name": "Cardiomegaly"},
        ],
        "annotations": [
            # polygon: pycocotools' rasteriser (as annToMask)
            {"image_id": 1, "category_id": 1, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
            # a box [x, y, w, h]: pixel centres inside; cols 5..6 (ceil(4.5)=5 .. ceil(6.6)=7),
            # rows 2..4 (ceil(1.9)=2 .. ceil(4.6)=5)
            {"image_id": 1, "category_id": 1, "bbox": [5.0, 2.4, 2.1, 2.7]},
            {"image_id": 2, "category_id": 2, "bbox": [1, 1, 2, 2], "segmentation": []},
        ],
    }


def test_coco_polygons_boxes_and_rles(tmp_path: Path) -> None:
    data = _coco()
    rle = encode_mask(np.eye(4, dtype=bool))
    data["annotations"].append({"image_id": 2, "category_id": 3, "segmentation": rle})
    truth = read_ground_truth(f"coco:{_write(tmp_path / 'coco.json', data)}")
    assert truth.ids == ["one.png", "two.png"] and truth.size("one.png") == (6, 8)
    assert truth.covered == ("Pleural Effusion", "Hernia", "Cardiomegaly")
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:3, 1:4] = True  # the polygon
    expected[2:5, 5:7] = True  # the box
    assert np.array_equal(truth.mask("one.png", "Pleural Effusion"), expected)
    hernia = np.zeros((4, 4), dtype=bool)
    hernia[1:3, 1:3] = True  # an empty segmentation falls back to the box
    assert np.array_equal(truth.mask("two.png", "Hernia"), hernia)
    assert np.array_equal(truth.mask("two.png", "Cardiomegaly"), np.eye(4, dtype=bool))
    assert not truth.mask("two.png", "Pleural Effusion").any()
    with pytest.raises(DollError, match="does not annotate 'Edema'"):
        truth.mask("one.png", "Edema")
    # a rectangle with integer corners is the same mask as a polygon and as a box
    square = {**data, "annotations": [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 3, 2]}]}
    boxed = read_ground_truth(f"coco:{_write(tmp_path / 'box.json', square)}")
    assert np.array_equal(boxed.mask("one.png", "Cardiomegaly")[1:3, 1:4], np.ones((2, 3)))
    assert int(boxed.mask("one.png", "Cardiomegaly").sum()) == 6


def test_masks_are_decoded_only_when_asked_for(tmp_path: Path) -> None:
    broken = {IMAGE: {"Edema": {"size": [4, 4], "counts": "00"}}}  # runs sum to 0, not 16
    truth = read_ground_truth(f"chexlocalize:{_write(tmp_path / 'seg.json', broken)}")
    assert truth.annotated(IMAGE) == ["Edema"]
    with pytest.raises(DollError, match=r"'Edema': RLE runs sum to 0 .* needs 16"):
        truth.mask(IMAGE, "Edema")


@pytest.mark.parametrize(
    ("content", "spec", "message"),
    [
        ("{not json", "chexlocalize", "is not JSON"),
        ("[1, 2]", "chexlocalize", "expected an object, got list"),
        ('{"a": {"img_size": [10]}}', "chexlocalize", "'img_size' must be \\[H, W\\]"),
        ('{"a": {"img_size": [4, 4], "Edema": [[[1, 2]]]}}', "chexlocalize", "polygon 0"),
        ('{"a": {"Edema": {"size": [4, 4]}}}', "chexlocalize", "not an RLE"),
        (
            '{"a": {"Edema": {"size": [4, 4], "counts": "04"}, '
            '"Cardiomegaly": {"size": [2, 8], "counts": "0`0"}}}',
            "chexlocalize",
            "its masks differ in size",
        ),
        (
            '{"a": {"img_size": [4, 4]}, "b": {"Edema": {"size": [4, 4], "counts": "04"}}}',
            "chexlocalize",
            "image 'b': mixes CheXlocalize's annotation",
        ),
        ('{"images": [], "categories": []}', "coco", "needs a list 'annotations'"),
        (
            '{"images": [{"id": 1, "file_name": "a", "height": 2, "width": 2}], '
            '"categories": [], "annotations": [{"image_id": 9, "category_id": 1}]}',
            "coco",
            "annotation 0: unknown image_id 9",
        ),
    ],
)
def test_bad_files_name_the_file_and_the_problem(
    tmp_path: Path, content: str, spec: str, message: str
) -> None:
    path = tmp_path / "truth.json"
    path.write_text(content)
    with pytest.raises(DollError, match=message) as caught:
        read_ground_truth(f"{spec}:{path}")
    assert str(path) in str(caught.value)


def test_specs() -> None:
    assert parse_spec("coco:a:b.json") == ("coco", Path("a:b.json"))
    assert parse_spec("gt.json", default_kind="chexlocalize") == ("chexlocalize", Path("gt.json"))
    with pytest.raises(DollError, match=r"unknown ground-truth kind 'nih'.*chexlocalize, nih-bbox"):
        parse_spec("nih:box.csv")
    with pytest.raises(DollError, match="must be KIND:PATH"):
        parse_spec("gt.json")
    with pytest.raises(DollError, match=r"ground truth file not found: missing\.json"):
        read_ground_truth("chexlocalize:missing.json")


HUGE = [200_000, 200_000]  # 40 G pixels: the old readers allocated it (MemoryError)


@pytest.mark.parametrize(
    ("kind", "document"),
    [
        ("chexlocalize", {"img": {"img_size": HUGE, "Edema": [[[1, 1], [5, 1], [5, 5]]]}}),
        ("chexlocalize", {"img": {"Edema": {"size": HUGE, "counts": "0"}}}),
        (
            "coco",
            {
                "images": [{"id": 1, "file_name": "a.png", "height": HUGE[0], "width": HUGE[1]}],
                "annotations": [],
                "categories": [{"id": 1, "name": "Edema"}],
            },
        ),
    ],
)
def test_declared_mask_sizes_are_bounded_before_allocating(
    tmp_path: Path, kind: str, document: dict[str, Any]
) -> None:
    """Issue 29, item 5: a ground-truth size is capped at the image pixel limit."""
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DollError, match=r"200000 x 200000 = 40,000,000,000 pixels is over"):
        truth = read_ground_truth(f"{kind}:{path}")
        truth.mask(truth.ids[0], "Edema")


def test_deeply_nested_json_and_an_enormous_box_are_one_message(tmp_path: Path) -> None:
    """Issue 29, item 5: RecursionError and OverflowError used to escape as tracebacks."""
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DollError, match="nests its JSON too deeply"):
        read_ground_truth(f"chexlocalize:{nested}")
    assert box_bounds([1e308, 1e308, 1e308, 1e308], NIH_SIZE) == (1024, 1024, 1024, 1024)
    assert box_bounds([-1e308, 10, 1e308, 5], NIH_SIZE) == (10, 15, 0, 0)
