"""Localization ground truth from radiologists, apart from any dataset.

Readers for CheXlocalize JSON (polygons and COCO RLE), NIH ChestX-ray14's
``BBox_List_2017.csv`` and COCO JSON give one type, :class:`GroundTruth`: per image id
and observation, a bool ``[H, W]`` mask at the image's native size. ``KIND:PATH`` specs
(:func:`read_ground_truth`) choose the reader.
"""

from doll_core.groundtruth.names import observation_name
from doll_core.groundtruth.specs import READERS, parse_spec, read_ground_truth
from doll_core.groundtruth.truth import GroundTruth, ImageTruth

__all__ = [
    "READERS",
    "GroundTruth",
    "ImageTruth",
    "observation_name",
    "parse_spec",
    "read_ground_truth",
]
