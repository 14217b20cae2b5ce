"""Which ground-truth image an id of DoLL's (a dataset's sample id, a file) stands for.

An id matches a ground-truth image id when one of its forms equals it, tried in order:

1. the id itself;
2. its CheXlocalize form: a CheXpert path ``.../patientP/studyS/viewV_xxx.jpg`` (as a
   CheXpert CSV's ``Path`` names it) is ``patientP_studyS_viewV_xxx``;
3. its file name (``images_001/00001369_000.png`` -> ``00001369_000.png``, NIH's ids);
4. its file name without the extension (COCO ``file_name``s often have none).

So a CheXlocalize id ``patient64541_study1_view1_frontal`` finds
``valid/patient64541/study1/view1_frontal.jpg`` under a CheXpert root, and an NIH id
``00001369_000.png`` that file in any sub-folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from doll_core.data.imageio import IMAGE_EXTENSIONS
from doll_core.data.paths import resolves_inside
from doll_core.errors import DollError
from doll_core.groundtruth.truth import GroundTruth

_CHEXPERT_PATH = re.compile(r"(?:^|/)(patient\d+)/(study\d+)/([^/]+?)(?:\.[^./]*)?$")


def chexlocalize_id(image_id: str) -> str | None:
    """``patientP_studyS_viewV_xxx`` of a CheXpert path, ``None`` for another id."""
    match = _CHEXPERT_PATH.search(image_id.replace("\\", "/"))
    return "_".join(match.groups()) if match else None


def id_forms(image_id: str) -> list[str]:
    """The forms of ``image_id``, in the order they are tried (module docstring)."""
    name = PurePosixPath(image_id.replace("\\", "/")).name
    forms = [image_id, chexlocalize_id(image_id), name, PurePosixPath(name).stem]
    return list(dict.fromkeys(f for f in forms if f))


def match_ids(ids: Iterable[str], truth: GroundTruth) -> dict[str, str]:
    """``{id: ground-truth id}`` for every id of ``ids`` that matches one of ``truth``'s."""
    matched = {}
    for image_id in ids:
        form = next((f for f in id_forms(image_id) if f in truth), None)
        if form is not None:
            matched[image_id] = form
    return matched


def find_images(folder: Path, truth: GroundTruth) -> dict[str, Path]:
    """``{ground-truth id: image file}``: the files under ``folder`` (searched recursively,
    symbolic links that lead outside it refused) whose path relative to ``folder``
    matches an image of ``truth`` (module docstring).

    Images are the files the dataset readers list
    (:data:`~doll_core.data.imageio.IMAGE_EXTENSIONS`, DICOM included).

    :raises DollError: when ``folder`` is not a folder, or two files match one image.
    """
    if not folder.is_dir():
        raise DollError(f"image folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        form = next((f for f in id_forms(relative) if f in truth), None)
        if form is None:
            continue
        resolves_inside(folder, path, relative)
        if form in found:
            raise DollError(
                f"two images under {folder} match {truth.source}'s {form!r}: "
                f"{found[form].relative_to(folder)} and {relative}"
            )
        found[form] = path
    return found
