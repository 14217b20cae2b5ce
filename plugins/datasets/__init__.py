"""Built-in dataset readers: chexpert, nih, padchest, mimic, csv (a CSV of your own),
multi (several as one), segfolder, jsrt, covid-qu-ex."""

from __future__ import annotations

from typing import Any

from doll_core import hookimpl
from doll_plugins.datasets.chexpert import CheXpert
from doll_plugins.datasets.covid_qu_ex import CovidQuEx
from doll_plugins.datasets.csv_labels import CsvLabels
from doll_plugins.datasets.jsrt import JSRT
from doll_plugins.datasets.mimic import MIMICCXRJPG
from doll_plugins.datasets.multi import MultiSource
from doll_plugins.datasets.nih import NIHChestXray14
from doll_plugins.datasets.padchest import PadChest
from doll_plugins.datasets.segfolder import SegFolder


@hookimpl
def doll_register_datasets(register: Any) -> None:
    register("chexpert", CheXpert, task="classification", splits=["train", "valid"])
    register("nih", NIHChestXray14, task="classification", splits=["all"])
    register("padchest", PadChest, task="classification", splits=[])
    register("mimic", MIMICCXRJPG, task="classification", splits=["all"])
    register("csv", CsvLabels, task="classification", splits=[])
    register("multi", MultiSource, task="classification", splits=[])
    register("segfolder", SegFolder, task="segmentation", splits=[])
    register("jsrt", JSRT, task="segmentation", splits=[])
    register("covid-qu-ex", CovidQuEx, task="segmentation", splits=["Train", "Val", "Test"])
