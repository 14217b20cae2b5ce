"""Derive ``data/real-cxr/`` from the shared ``real-cxr-scale`` set (development part).

This script documents how ``data/real-cxr/`` was made. DoLL never runs it and never reads
the source folder at run or test time: the derived files are committed with a NOTICE.

    python scripts/derive_real_cxr.py --source /work/shared/real-cxr-scale --out data/real-cxr

What it does (deterministic: a second run writes byte-identical files):

* every image is downscaled so that its longer side is ``--side`` pixels (default 256),
  aspect ratio kept, with Pillow's LANCZOS filter; the mode is kept (L stays L, RGB stays
  RGB) and so is the format (PNG stays PNG; JPEG stays JPEG, quality 90, baseline,
  ``optimize=False``); no metadata is written (no EXIF, ICC profile, DPI or timestamp);
* every lung mask is resized with NEAREST to exactly its derived image's size and stored as
  a mode-L PNG; its values stay a subset of the source mask's (0, 127 = V7 "Ignore",
  255 = lung);
* one patient-level train/valid/test split, seeded, shared by ``classification/`` and
  ``lungs/`` (see ``split_patients``);
* ``manifest.csv`` (source path, source sha256 - verified by hashing -, licence,
  attribution, derived size/mode/format of every derived file) and ``NOTICE.md``.

With ``--full-size-out DIR`` it also copies, byte for byte, a few full-size source files of
train-split patients for a benchmark (``tests/data/real/full-size/``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 20261206
JPEG_QUALITY = 90
SPLITS = ("train", "valid", "test")

# lungs/: fractions of the 29 patients, and the minimum image counts
LUNG_TEST_FRACTION = 0.30
LUNG_VALID_FRACTION = 0.20
MIN_LUNG_TRAIN_IMAGES = 20
MIN_LUNG_TEST_IMAGES = 12
# every other classification patient, per finding group
CLS_TEST_FRACTION = 0.15
CLS_VALID_FRACTION = 0.15

COVID = "Pneumonia/Viral/COVID-19"


# fixed order in which the classification groups are split; a Kermany patient with files
# in two findings is assigned once, in the first group it is met in
def _kermany(finding: str):
    return lambda r: r["source"] == "kermany" and r["finding"] == finding


CLS_GROUPS = (
    ("COVID-19 without mask", lambda r: r["finding"] == COVID),
    ("Kermany No Finding", _kermany("No Finding")),
    ("Kermany Bacterial", _kermany("Pneumonia/Bacterial")),
    ("Kermany Viral", _kermany("Pneumonia/Viral")),
)

IEEE8023 = "ieee8023/covid-chestxray-dataset @ 584034aa7fbf06496741f11008d72fd791c8e443"
COHEN = (
    "Cohen J.P., Morrison P., Dao L. et al., COVID-19 image data collection, "
    "arXiv:2003.11597, https://github.com/ieee8023/covid-chestxray-dataset"
)
HANNOVER = (
    "Winther H.B. et al., COVID-19 Image Repository, Hannover Medical School, "
    "doi:10.6084/m9.figshare.12275009"
)
KERMANY = (
    "Kermany D., Zhang K., Goldbaum M. (2018), Labeled Optical Coherence Tomography (OCT) "
    "and Chest X-Ray Images for Classification, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2"
)
V7 = (
    "V7 Labs, COVID-19 X-ray dataset lung annotations, "
    "https://github.com/v7labs/covid-19-xray-dataset (CC BY 4.0), via torchxrayvision 1.5.7"
)
JOURNAL_FIGURES = {
    "40779_2020_233_Fig2_HTML-a": "Military Medical Research, doi:10.1186/s40779-020-0233-6",
    "41182_2020_203_Fig3_HTML": "Tropical Medicine and Health, doi:10.1186/s41182-020-00203-0",
    "thnov10p5641g006-c": "Theranostics 10:5641, doi:10.7150/thno.46465",
}


def attribution(source_path: str) -> str:
    stem = Path(source_path).stem
    if source_path.startswith("lungs/masks/"):
        return V7
    if stem in JOURNAL_FIGURES:
        return f"{JOURNAL_FIGURES[stem]}; via {COHEN} ({IEEE8023})"
    if source_path.startswith("classification/images/hannover/"):
        return HANNOVER
    if source_path.startswith("lungs/images/"):  # ieee8023's 2000x2000 rendering
        return f"{HANNOVER}; 2000x2000 rendering via {COHEN} ({IEEE8023})"
    if source_path.startswith("classification/images/kermany/"):
        return f"{KERMANY}; via ozanguldali/final-covid-chestxray @ cb524c6d"
    raise ValueError(f"no attribution for {source_path}")


# --------------------------------------------------------------------------- helpers


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({c: row[c] for c in columns})


def target_size(width: int, height: int, side: int) -> tuple[int, int]:
    """Longer side -> ``side`` (never upscaled), the other rounded half up."""
    longer = max(width, height)
    if longer <= side:
        return width, height
    if width >= height:
        return side, max(1, (2 * height * side + width) // (2 * width))
    return max(1, (2 * width * side + height) // (2 * height)), side


def encode(image: Image.Image, fmt: str) -> bytes:
    """Encode without any metadata (no EXIF, ICC, DPI, text or time chunks)."""
    clean = Image.frombytes(image.mode, image.size, image.tobytes())  # empty .info
    buf = io.BytesIO()
    if fmt == "PNG":
        clean.save(buf, format="PNG", optimize=False, compress_level=9)
    elif fmt == "JPEG":
        clean.save(
            buf,
            format="JPEG",
            quality=JPEG_QUALITY,
            optimize=False,
            progressive=False,
            subsampling="4:2:0",
        )
    else:
        raise ValueError(fmt)
    return buf.getvalue()


def derive_image(src: Path, side: int) -> tuple[bytes, Image.Image, str]:
    with Image.open(src) as im:
        fmt = im.format
        if fmt not in ("PNG", "JPEG") or im.mode not in ("L", "RGB"):
            raise ValueError(f"{src}: unexpected {fmt} {im.mode}")
        im.load()
        size = target_size(im.width, im.height, side)
        out = im.resize(size, Image.Resampling.LANCZOS) if size != im.size else im.copy()
    assert out.mode in ("L", "RGB")
    return encode(out, fmt), out, fmt


def derive_mask(src: Path, size: tuple[int, int], image_size_source: tuple[int, int]) -> bytes:
    with Image.open(src) as m:
        if m.format != "PNG" or m.mode != "L":
            raise ValueError(f"{src}: mask is {m.format} {m.mode}, expected PNG L")
        if m.size != image_size_source:
            raise ValueError(f"{src}: mask {m.size} != image {image_size_source}")
        m.load()
        source_values = set(np.unique(np.asarray(m)).tolist())
        out = m.resize(size, Image.Resampling.NEAREST)
    values = set(np.unique(np.asarray(out)).tolist())
    if not values <= source_values:
        raise ValueError(f"{src}: derived values {values} not within {source_values}")
    if out.size != size:
        raise ValueError(f"{src}: derived mask {out.size} != {size}")
    return encode(out, "PNG")


# --------------------------------------------------------------------------- split


def _cut(n: int, test_fraction: float, valid_fraction: float) -> tuple[int, int]:
    n_test = int(n * test_fraction + 0.5)
    n_valid = int(n * valid_fraction + 0.5)
    return n_test, n_test + n_valid


def split_patients(lung_images: dict[str, int], cls_rows: list[dict[str, str]]) -> dict[str, str]:
    """patient id -> split, for the patients of ``lungs/`` and of ``classification/``.

    One ``random.Random(SEED)`` is consumed in a fixed order: first the sorted lung patients
    are shuffled; the first 30 % go to test, the next 20 % to valid, the rest to train. If
    test then holds fewer than 12 images, the test/valid boundary moves one patient later
    until it does (valid shrinks first); if train holds fewer than 20 images, the valid/train
    boundary moves one patient earlier until it does. Classification patients who are lung
    patients take their split. Every other classification patient is split within its
    finding group (``CLS_GROUPS``, in that order; a patient is assigned in the first group it
    is met in): sorted ids shuffled, about 15 % test, 15 % valid, the rest train.
    """
    rng = random.Random(SEED)
    split: dict[str, str] = {}

    order = sorted(lung_images)
    rng.shuffle(order)
    a, b = _cut(len(order), LUNG_TEST_FRACTION, LUNG_VALID_FRACTION)

    def images(ids: list[str]) -> int:
        return sum(lung_images[p] for p in ids)

    while images(order[:a]) < MIN_LUNG_TEST_IMAGES:
        a += 1
        b = max(a, b)
        print(f"lungs: test has < {MIN_LUNG_TEST_IMAGES} images, moved {order[a - 1]} to test")
    while images(order[b:]) < MIN_LUNG_TRAIN_IMAGES:
        if b <= a:
            sys.exit("lungs: cannot reach the minimum train size")
        b -= 1
        print(f"lungs: train has < {MIN_LUNG_TRAIN_IMAGES} images, moved {order[b]} to train")
    if a > len(order):
        sys.exit("lungs: cannot reach the minimum test size")
    for p in order[:a]:
        split[p] = "test"
    for p in order[a:b]:
        split[p] = "valid"
    for p in order[b:]:
        split[p] = "train"

    for _name, member in CLS_GROUPS:
        ids = sorted({r["patient"] for r in cls_rows if member(r)} - split.keys())
        rng.shuffle(ids)
        t, v = _cut(len(ids), CLS_TEST_FRACTION, CLS_VALID_FRACTION)
        for i, p in enumerate(ids):
            split[p] = "test" if i < t else "valid" if i < v else "train"
    missing = {r["patient"] for r in cls_rows} - split.keys()
    if missing:
        sys.exit(f"patients in no group: {sorted(missing)}")
    return split


def print_table(title: str, rows: list[tuple[str, str, str]]) -> str:
    """rows: (split, group, patient) per image; prints and returns a markdown table."""
    groups = sorted({g for _, g, _ in rows})
    lines = [
        f"{title}",
        "",
        "| split | " + " | ".join(groups) + " | all |",
        "|---|" + "---|" * (len(groups) + 1),
    ]
    for s in (*SPLITS, "all"):
        cells = []
        for g in [*groups, "all"]:
            sel = [
                (x, y, p) for x, y, p in rows if (s == "all" or x == s) and (g == "all" or y == g)
            ]
            cells.append(f"{len(sel)} / {len({p for _, _, p in sel})}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    return text


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, required=True, help="the real-cxr-scale folder")
    ap.add_argument("--out", type=Path, required=True, help="e.g. data/real-cxr")
    ap.add_argument("--side", type=int, default=256, help="longer side of derived images")
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files this script wrote into --out before",
    )
    ap.add_argument(
        "--full-size-out",
        type=Path,
        default=None,
        help="also copy a few full-size train-split source files here",
    )
    args = ap.parse_args(argv)
    src: Path = args.source
    out: Path = args.out

    owned = {"classification", "lungs", "manifest.csv", "NOTICE.md"}
    if out.exists() and any(out.iterdir()):
        others = {p.name for p in out.iterdir()} - owned
        if not args.overwrite or others:
            sys.exit(f"{out} is not empty (use --overwrite; foreign entries: {sorted(others)})")
        for name in owned:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)

    manifest = {r["path"]: r for r in read_csv(src / "manifest.csv")}
    labels = read_csv(src / "classification/labels.csv")

    # lungs: images and masks, joined by stem
    lung_images = sorted(p for p in manifest if p.startswith("lungs/images/"))
    lung_masks = {Path(p).stem: p for p in manifest if p.startswith("lungs/masks/lungs/")}
    stems = [Path(p).stem for p in lung_images]
    if len(set(stems)) != len(stems) or set(stems) != set(lung_masks):
        sys.exit("lungs: images and masks do not pair one to one by stem")
    lung_patient_images = Counter(manifest[p]["patient_id"] for p in lung_images)

    for r in labels:
        m = manifest["classification/" + r["path"]]
        if (m["patient_id"], m["finding"]) != (r["patient"], r["finding"]):
            sys.exit(f"labels.csv and manifest.csv disagree on {r['path']}")

    split = split_patients(dict(lung_patient_images), labels)

    # --- derive the files
    records: list[dict[str, object]] = []

    def record(dest: str, source_path: str, data: bytes, size, mode, fmt) -> None:
        m = manifest[source_path]
        actual = sha256(src / source_path)
        if actual != m["sha256"]:
            sys.exit(f"{source_path}: sha256 {actual} != manifest {m['sha256']}")
        (out / dest).parent.mkdir(parents=True, exist_ok=True)
        (out / dest).write_bytes(data)
        records.append(
            {
                "path": dest,
                "source_path": source_path,
                "source_sha256": m["sha256"],
                "licence": m["license"],
                "attribution": attribution(source_path),
                "width": size[0],
                "height": size[1],
                "mode": mode,
                "format": fmt,
            }
        )

    cls_rows = []
    for r in sorted(labels, key=lambda r: r["path"]):
        source_path = "classification/" + r["path"]
        rel = r["path"].removeprefix("images/")
        data, im, fmt = derive_image(src / source_path, args.side)
        record(f"classification/images/{rel}", source_path, data, im.size, im.mode, fmt)
        cls_rows.append(
            {
                "path": rel,
                "finding": r["finding"],
                "patient": r["patient"],
                "source": r["source"],
                "split": split[r["patient"]],
            }
        )
    write_csv(
        out / "classification/labels.csv",
        ["path", "finding", "patient", "source", "split"],
        cls_rows,
    )

    lung_rows = []
    mask_values: Counter[str] = Counter()
    for source_path in lung_images:
        stem = Path(source_path).stem
        m = manifest[source_path]
        data, im, fmt = derive_image(src / source_path, args.side)
        record(f"lungs/images/{Path(source_path).name}", source_path, data, im.size, im.mode, fmt)
        mask_data = derive_mask(
            src / lung_masks[stem], im.size, (int(m["width"]), int(m["height"]))
        )
        record(f"lungs/masks/lungs/{stem}.png", lung_masks[stem], mask_data, im.size, "L", "PNG")
        with Image.open(io.BytesIO(mask_data)) as dm:
            assert dm.size == im.size and dm.mode == "L"
            mask_values[" ".join(map(str, np.unique(np.asarray(dm)).tolist()))] += 1
        lung_rows.append(
            {"image": stem, "split": split[m["patient_id"]], "patient": m["patient_id"]}
        )
    write_csv(out / "lungs/splits.csv", ["image", "split", "patient"], lung_rows)

    records.sort(key=lambda r: r["path"])
    write_csv(
        out / "manifest.csv",
        [
            "path",
            "source_path",
            "source_sha256",
            "licence",
            "attribution",
            "width",
            "height",
            "mode",
            "format",
        ],
        records,
    )

    # --- checks and tables
    seen: dict[str, set[str]] = defaultdict(set)
    for r in cls_rows:
        seen[r["patient"]].add(r["split"])
    for r in lung_rows:
        seen[r["patient"]].add(r["split"])
    leaks = {p: s for p, s in seen.items() if len(s) > 1}
    if leaks:
        sys.exit(f"patients in two splits: {leaks}")
    print(
        f"check: {len(seen)} patients, each in exactly one split "
        "(labels.csv and lungs/splits.csv together)"
    )
    print(
        f"check: {len(lung_rows)} derived masks, each the size of its derived image; "
        f"values {dict(mask_values)}\n"
    )

    lung_table = print_table(
        "lungs/ (images / patients)", [(r["split"], "lungs", r["patient"]) for r in lung_rows]
    )
    cls_table = print_table(
        "classification/ (images / patients) per finding",
        [(r["split"], r["finding"], r["patient"]) for r in cls_rows],
    )

    (out / "NOTICE.md").write_text(
        notice(args.side, lung_table, cls_table, len(records), len(lung_patient_images)),
        encoding="utf-8",
    )
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(records)} derived files, {total} bytes in {out}")

    if args.full_size_out is not None:
        copy_full_size(src, args.full_size_out, manifest, labels, lung_images, split)


# --------------------------------------------------------------------------- full size


def copy_full_size(src: Path, dest: Path, manifest, labels, lung_images, split) -> None:
    """2 lung-train Hannover 2000x2000 JPEGs, the Hannover PNGs of the same radiographs, and
    4 Kermany JPEGs of train patients 1000-2400 px wide (one progressive, one with an ICC
    profile, the rest baseline without one, covering the three Kermany findings, the last
    one the widest); otherwise the smallest files first, ties by path."""

    def by_size(paths):
        return sorted(paths, key=lambda p: (int(manifest[p]["bytes"]), p))

    jpgs = by_size(
        p
        for p in lung_images
        if manifest[p]["patient_id"].startswith("hannover:")
        and split[manifest[p]["patient_id"]] == "train"
        and (manifest[p]["width"], manifest[p]["height"]) == ("2000", "2000")
    )
    chosen = jpgs[:2]
    for p in list(chosen):
        png = f"classification/images/hannover/{Path(p).stem}.png"
        assert png in manifest and split[manifest[png]["patient_id"]] == "train"
        chosen.append(png)

    kermany = by_size(
        "classification/" + r["path"]
        for r in labels
        if r["source"] == "kermany"
        and split[r["patient"]] == "train"
        and 1000 <= int(manifest["classification/" + r["path"]]["width"]) <= 2400
    )

    def kind(p):
        with Image.open(src / p) as im:
            return (
                "progressive"
                if im.info.get("progressive")
                else "icc"
                if im.info.get("icc_profile")
                else "plain"
            )

    finding = {"classification/" + r["path"]: r["finding"] for r in labels}
    picked: list[str] = []
    for want in ("progressive", "icc"):
        picked.append(
            next(
                p
                for p in kermany
                if kind(p) == want and finding[p] not in {finding[q] for q in picked}
            )
        )
    for f in ("No Finding", "Pneumonia/Bacterial", "Pneumonia/Viral"):
        if len(picked) < 4 and f not in {finding[q] for q in picked}:
            picked.append(next(p for p in kermany if kind(p) == "plain" and finding[p] == f))
    # the last slot(s): the widest remaining baseline JPEG, so that the sizes spread
    rest = sorted(
        (p for p in kermany if p not in picked and kind(p) == "plain"),
        key=lambda p: (-int(manifest[p]["width"]), int(manifest[p]["bytes"]), p),
    )
    picked += rest[: 4 - len(picked)]
    chosen += picked

    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    for p in chosen:
        target = dest / Path(p).name
        shutil.copyfile(src / p, target)
        if sha256(target) != manifest[p]["sha256"]:
            sys.exit(f"{p}: copy does not match the manifest sha256")
        total += target.stat().st_size
        m = manifest[p]
        extra = f" {kind(p)}" if p in picked else ""
        print(
            f"full size: {target.name:32s} <- {p} {m['format']} {m['mode']} "
            f"{m['width']}x{m['height']} {m['bytes']} B {m['patient_id']} "
            f"{finding.get(p, m['finding'])}{extra}"
        )
    print(f"full size: {len(chosen)} files, {total} bytes")
    if total >= 5_000_000:
        sys.exit("full size: over 5 MB")


# --------------------------------------------------------------------------- NOTICE

SOURCES_TABLE = "\n".join(
    [
        "| files | source (repository @ commit, or package / DOI) | licence | "
        "attribution asked for |",
        "|---|---|---|---|",
        (
            "| `classification/images/hannover/` | ml-workgroup/covid-19-image-repository @ "
            "ad7ab099b425f16e06bba22322336b7d6a732965, `png/<image_id>.png` | [CC BY "
            "3.0](https://creativecommons.org/licenses/by/3.0/) | Winther H.B. et al., "
            "COVID-19 Image Repository, Hannover Medical School, "
            "doi:10.6084/m9.figshare.12275009 |"
        ),
        (
            "| `lungs/images/<8 hex>.jpg` (Hannover radiographs, ieee8023's 2000x2000 "
            "rendering) | ieee8023/covid-chestxray-dataset @ "
            "584034aa7fbf06496741f11008d72fd791c8e443, `images/<name>` | [CC BY "
            "3.0](https://creativecommons.org/licenses/by/3.0/) (per image, that commit's "
            "`license` column) | Winther et al. as above; Cohen J.P., Morrison P., Dao L. "
            "et al., COVID-19 image data collection, arXiv:2003.11597 / arXiv:2006.11988 |"
        ),
        (
            "| journal figures in `lungs/images/` and `classification/images/ieee8023/` | "
            "ieee8023/covid-chestxray-dataset @ 584034aa7fbf06496741f11008d72fd791c8e443, "
            "`images/<name>`, from open-access articles: `40779_2020_233_Fig2_HTML-a.png` "
            "doi:10.1186/s40779-020-0233-6 (Military Medical Research); "
            "`41182_2020_203_Fig3_HTML.jpg` doi:10.1186/s41182-020-00203-0 (Tropical "
            "Medicine and Health); `thnov10p5641g006-c.png` doi:10.7150/thno.46465 "
            "(Theranostics 10:5641) | [CC BY "
            "4.0](https://creativecommons.org/licenses/by/4.0/) | the article (DOI), via "
            "Cohen et al., COVID-19 image data collection |"
        ),
        (
            "| `classification/images/kermany/` | Kermany D., Zhang K., Goldbaum M. (2018), "
            '"Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for '
            'Classification", Mendeley Data v2, doi:10.17632/rscbjbr9sj.2; files taken from '
            "ozanguldali/final-covid-chestxray @ cb524c6db7d68508455d4b7bc96e4126c50c313a, "
            "`dataset/{train,test}/{Normal,Bacterial,Viral-Other}/` (copied unchanged there "
            'from Kaggle\'s "Coronahack Chest X-Ray", a redistribution of Kermany et al.; '
            "not compared byte for byte with the Mendeley archive) | [CC BY "
            "4.0](https://creativecommons.org/licenses/by/4.0/) (Mendeley Data) | Kermany, "
            "Zhang, Goldbaum (2018), Mendeley Data v2, doi:10.17632/rscbjbr9sj.2; Kermany "
            "et al., Cell 172(5), 2018 |"
        ),
        (
            "| `lungs/masks/lungs/` | V7 Labs lung annotations: torchxrayvision 1.5.7 "
            "wheel, `torchxrayvision/data/semantic_masks_v7labs_lungs.zip`; identical to "
            "v7labs/covid-19-xray-dataset @ 51fca0d0d089b2fa7b0b95f0aed32ebaebd561f2, "
            "`annotations/all-images-semantic-masks/` | [CC BY "
            "4.0](https://creativecommons.org/licenses/by/4.0/) (V7 README) | V7 Labs, "
            "COVID-19 X-ray dataset lung annotations, "
            "https://github.com/v7labs/covid-19-xray-dataset |"
        ),
        (
            "| `classification/labels.csv` | finding and patient from Hannover's `data.csv` "
            "(CC BY 3.0), V7's tags (CC BY 4.0) and Kermany's file names | as its sources | "
            "as above |"
        ),
    ]
)


def notice(side: int, lung_table: str, cls_table: str, n_files: int, n_lung_patients: int) -> str:
    test_pct, valid_pct = int(LUNG_TEST_FRACTION * 100), int(LUNG_VALID_FRACTION * 100)
    return f"""# data/real-cxr: derived, downscaled copies of openly licensed chest radiographs

Real, published chest radiographs for exercising DoLL end to end: a lung-segmentation part
(`lungs/`, radiographs with V7 Labs lung masks) and an image-level classification part
(`classification/`). These are **derived, downscaled copies**, not the published files.
They were made by `scripts/derive_real_cxr.py` (seed {SEED}) from the development part of
the shared set `real-cxr-scale` (every file there byte for byte as published); DoLL never
reads that folder. `manifest.csv` lists, for each of the {n_files} derived files, its source
path, the sha256 of the source file, its licence, the attribution to give and the derived
width, height, mode and format.

## Changes made

Changes were made: downscaled; masks renamed to .png and resized by nearest neighbour.

* Images: resized so that the longer side is {side} pixels, aspect ratio kept (Pillow
  `Image.resize`, LANCZOS); mode kept (L stays L, RGB stays RGB); format kept (PNG stays PNG;
  JPEG re-encoded at quality {JPEG_QUALITY}, baseline, 4:2:0 for RGB). No metadata is kept:
  no EXIF, no ICC profile (89 Kermany JPEGs carried one), no DPI, no timestamps.
* Masks: V7's masks carry their image's file name (`.jpg` or `.png`) upstream, always with
  PNG content; here they are `<stem>.png`, resized with NEAREST to exactly the size of their
  derived image, mode L. Values: 0 = background, 255 = lung, 127 = V7's "Ignore" class
  (devices or markup overlapping the lung; 3 masks have it). torchxrayvision reads
  `mask == 255`; decide explicitly what 127 means for you.

## Layout

```
classification/images/{{hannover,ieee8023,kermany}}/<source file name>
classification/labels.csv   path,finding,patient,source,split
                            (path relative to classification/images/)
lungs/images/<source file name>
lungs/masks/lungs/<stem>.png
lungs/splits.csv            image,split,patient  (image = file stem)
manifest.csv                path,source_path,source_sha256,licence,attribution,
                            width,height,mode,format
NOTICE.md                   this file
```

Every radiograph in `lungs/` is also in `classification/`: the 3 journal figures as the
same picture; the Hannover ones as Hannover's own 640-pixel-wide PNG, a different crop and
scale than ieee8023's 2000x2000 JPEG in `lungs/` (join on the stem), so the masks do not
line up with the classification copies.

## Sources, licences and attribution

{SOURCES_TABLE}

**Not included:** ieee8023's `metadata.csv` (CC BY-NC-SA 4.0): none of its rows or text are
here; findings and patients come from Hannover's `data.csv` and V7's tags. Also not
included: the other columns of the source `labels.csv` (Hannover's clinical columns, V7's
tags), and the held-out part of `real-cxr-scale` (disjoint by patient).

## Split

One patient-level split, shared by both parts (`split` in `classification/labels.csv`,
`lungs/splits.csv`), made with `random.Random({SEED})` consumed in a fixed order over sorted
patient ids:

1. The {n_lung_patients} patients of `lungs/` are shuffled; the first
   {test_pct} % go to `test`, the next {valid_pct} % to `valid`, the rest to
   `train`; if `test` has fewer than {MIN_LUNG_TEST_IMAGES} images or `train` fewer than
   {MIN_LUNG_TRAIN_IMAGES}, a boundary moves one patient at a time until both hold.
2. A classification image of a lung patient takes that patient's split (so the lung test
   patients are classification `test` too and are never used for classifier training or
   labels).
3. Every other classification patient is split within its finding group, in this order:
   COVID-19 without mask, Kermany No Finding, Kermany Bacterial, Kermany Viral (a Kermany
   patient with both bacterial and viral files is assigned once, in the first group it is
   met in): about 70 % `train`, 15 % `valid`, 15 % `test`.

No patient id is in two splits, across both files (checked by the script).

{lung_table}
{cls_table}
(A Kermany patient with bacterial and viral files counts under both findings.)

## Caveat: confounding

Every COVID-19 image is an adult (Hannover Medical School, or a journal figure) and every
other class is a child aged 1-5 from one hospital in Guangzhou (Guangzhou Women and
Children's Medical Center), with different detectors and file formats. A classifier can tell
the classes apart by source alone (age, hospital, format). Use these files to exercise the
pipeline, not to claim accuracy. Labels are coarse: Hannover images are COVID-19 because the
repository collects COVID-19 cases (patient-level, not a reading of each image).
"""


if __name__ == "__main__":
    main()
