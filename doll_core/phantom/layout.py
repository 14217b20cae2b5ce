"""Where the phantom puts things: the on-disk layouts, in one place.

::

    OUT/
      PHANTOM.json                          what was generated, with which settings
      CheXpert-v1.0-small/
        train.csv, valid.csv                CheXpert's exact columns
        {train,valid}/patientNNNNN/studyN/view1_frontal.jpg
      lesion-masks/
        {train,valid}/patientNNNNN/studyN/view1_frontal/<observation>.png
                                            one binary PNG (0/255) per present observation,
                                            <observation> = name in lower case with '_'
                                            for spaces, e.g. pleural_effusion.png
      organs/                               segfolder layout
        images/organ_NNNN.png
        masks/{lungs,heart,clavicles}/organ_NNNN.png
      COVID-QU-Ex/Infection Segmentation Data/{Train,Val,Test}/
        {COVID-19,Non-COVID,Normal}/{images,infection masks,lung masks}/<name>.png
      JSRT/                                 only with n_jsrt > 0
        images/JPC{LN,NN}NNN.IMG            2048x2048 big-endian 12-bit, high = dark
        scr/fold{1,2}/masks/<organ>/JPC{LN,NN}NNN.gif   1024x1024, 0/255
"""

from __future__ import annotations

from pathlib import Path

from doll_core.data.paths import contained_path

CHEXPERT_DIR = "CheXpert-v1.0-small"
LESION_DIR = "lesion-masks"
ORGAN_DIR = "organs"
ORGAN_CLASSES = ("lungs", "heart", "clavicles")
COVID_DIR = "COVID-QU-Ex"
JSRT_DIR = "JSRT"
MANIFEST = "PHANTOM.json"
#: Everything the phantom writes at the top of its folder.
TOP_LEVEL = (MANIFEST, CHEXPERT_DIR, LESION_DIR, ORGAN_DIR, COVID_DIR, JSRT_DIR)


def observation_slug(observation: str) -> str:
    """``"Pleural Effusion"`` -> ``"pleural_effusion"``."""
    return observation.lower().replace(" ", "_")


def lesion_mask_path(root: str | Path, image_id: str, observation: str) -> Path:
    """The ground-truth mask of ``observation`` for the CheXpert image ``image_id`` (its
    CSV ``Path``, e.g. ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``).
    It exists exactly when the observation is present in that image. An id that leads
    outside the mask folder is refused (:class:`~doll_core.data.imageio.ImageReadError`)."""
    relative = Path(image_id)
    if relative.parts and relative.parts[0] == CHEXPERT_DIR:
        relative = Path(*relative.parts[1:])
    name = relative.with_suffix("") / f"{observation_slug(observation)}.png"
    return contained_path(Path(root) / LESION_DIR, name)
