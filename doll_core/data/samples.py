"""The base of image dataset readers: common options, the per-file error policy, and
batching that carries skip records from DataLoader workers to the main process.

A reader's ``ds[i]`` returns a sample dict, or, when the file cannot be read and
``on_error="skip"``, a :class:`SkippedSample`. :func:`collate_samples` batches the good
samples and lists the skipped ones under ``"skipped"``, so that a run sees every skip even
when samples were loaded in worker processes.

Sample dicts:

- classification: ``image`` float32 ``[C, H, W]`` in ``[0, 1]``, ``labels`` float32
  ``[14]``, ``label_mask`` bool ``[14]`` (False = leave out of the loss), ``id`` str;
- segmentation: ``image`` float32 ``[C, H, W]``, ``mask`` float32 ``[K, H, W]`` of 0/1,
  ``id`` str, ``report`` dict (what the files held, for ``doll data inspect``) and, when
  the reader leaves some mask values out, ``mask_weight`` float32 ``[K, H, W]`` (0 =
  leave the pixel out of the loss and the scores).

:func:`collate_samples` gathers the samples' ``report`` dicts, with their ``id``, under
``"reports"`` instead of batching them.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypedDict, TypeVar, Unpack

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from doll_core.data.decoded import DecodedImages, read_levels
from doll_core.data.imageio import MAX_IMAGE_PIXELS, ImageFacts, ImageReadError
from doll_core.errors import DollError
from doll_core.home import expand_home

T = TypeVar("T")

OnError = Literal["skip", "fail"]
ON_ERROR_CHOICES: tuple[str, ...] = ("skip", "fail")


class ReaderOptions(TypedDict, total=False):
    """The options every image reader shares, given once to :class:`ImageDataset` (as
    zennit's attributors pass theirs to one base), each reader taking them as
    ``**options``; their defaults are :data:`READER_DEFAULTS`.

    ``size``: output size, ``n`` or ``(H, W)``; ``None`` keeps each file's size.
    ``grayscale``: one channel if true, else three. ``on_error``: ``"skip"`` records an
    unreadable file and goes on, ``"fail"`` stops with a message naming it.
    ``max_image_pixels``: a file that declares more pixels is an unreadable file, refused
    before it is decoded (``None``: no limit).
    """

    size: int | Sequence[int] | None
    grayscale: bool
    on_error: OnError
    max_image_pixels: int | None


class LabelOptions(ReaderOptions, total=False):
    """:class:`ReaderOptions` and the label policies of the readers of CheXpert-style
    labels (``MappedClassification`` takes them; default ``"ones"`` and ``"zeros"``):
    ``uncertainty``, what an uncertain label becomes (``ones``, ``zeros``, ``ignore``, or
    a mapping from observation, and ``default``, to one); ``blank``, what an unmentioned
    observation becomes (``zeros`` or ``ignore``)."""

    uncertainty: str | Mapping[str, str]
    blank: str


#: the defaults of :class:`ReaderOptions`; a reader class changes one with its
#: ``option_defaults`` (the classification readers: ``{"size": 224}``)
READER_DEFAULTS: Mapping[str, Any] = {
    "size": None,
    "grayscale": True,
    "on_error": "skip",
    "max_image_pixels": MAX_IMAGE_PIXELS,
}


def _own_parameters(init: Any) -> list[inspect.Parameter]:
    """The parameters of an ``__init__`` after ``self``, annotations resolved where they
    resolve at run time (else as written)."""
    try:
        parameters = inspect.signature(init, eval_str=True).parameters
    except Exception:
        parameters = inspect.signature(init).parameters
    return list(parameters.values())[1:]


def takes_shared_options(cls: type) -> bool:
    """Whether the ``__init__`` that ``cls`` runs takes ``**options`` (the shared
    :class:`ReaderOptions`, passed on to :class:`ImageDataset`)."""
    init = next(klass.__dict__["__init__"] for klass in cls.__mro__ if "__init__" in klass.__dict__)
    return any(p.kind is p.VAR_KEYWORD for p in _own_parameters(init))


def reader_signature(cls: type) -> inspect.Signature:
    """The signature of a reader class as users call it: ``root``, the options of its own
    ``__init__`` and of each base's that passes ``**options`` on (the class's first, by
    keyword), then the shared :class:`ReaderOptions` with the class's defaults. What the
    registry checks parameters against and ``doll plugins`` shows."""
    root = inspect.Parameter("root", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    own: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is ImageDataset:
            continue
        parameters = _own_parameters(init)
        for parameter in parameters:
            named = parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
            if named and parameter.name != "root" and parameter.name not in own:
                own[parameter.name] = parameter.replace(kind=parameter.KEYWORD_ONLY)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break  # this __init__ passes nothing on: the bases' options are not the class's
    defaults = {**READER_DEFAULTS, **getattr(cls, "option_defaults", {})}
    annotations = typing.get_type_hints(ReaderOptions)
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                          annotation=annotations[name])
        for name, default in defaults.items()
        if name not in own
    ]  # fmt: skip
    return inspect.Signature([root, *own.values(), *shared])


@dataclass(frozen=True)
class SkippedSample:
    """A sample whose file could not be read: its id, the file, and why."""

    id: str
    path: str
    reason: str


def parse_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``None`` (native size), ``n`` (square) or ``(H, W)`` -> ``(H, W)`` or ``None``."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        values: list[Any] = [size, size]
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        values = list(size)
    else:
        raise DollError(f"size must be an integer or [height, width], got {size!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in values):
        raise DollError(f"size must hold integers >= 8, got {size!r}")
    return int(values[0]), int(values[1])


def check_choice(option: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a user error naming the option."""
    if value not in choices:
        raise DollError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


class ImageDataset(Dataset[Any]):
    """Base class of the built-in readers (third-party readers may use it too).

    Subclasses implement :meth:`__len__`, :meth:`sample_id`, :meth:`load` and
    :meth:`summary`; :meth:`load` raises :class:`ImageReadError` for an unreadable file.
    A subclass's ``__init__`` takes its own options by keyword and the shared ones
    (:class:`ReaderOptions`) as ``**options``, passed on unchanged; the class's signature
    lists them all (:func:`reader_signature`).
    """

    #: defaults of :class:`ReaderOptions` this class changes
    option_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A reader that takes the shared options as ``**options`` gets the signature
        :func:`reader_signature` composes; one whose ``__init__`` states them all keeps
        its own."""
        super().__init_subclass__(**kwargs)
        composed = reader_signature(cls) if takes_shared_options(cls) else None
        cls.__signature__ = composed  # type: ignore[attr-defined]  # None: its __init__'s

    def __init__(self, root: str | Path, **options: Unpack[ReaderOptions]) -> None:
        """:param root: the dataset folder. :param options: :class:`ReaderOptions`."""
        unknown = sorted(set(options) - set(READER_DEFAULTS))
        if unknown:
            raise DollError(f"{type(self).__name__}: unknown option(s) {', '.join(unknown)}")
        values: dict[str, Any] = {**READER_DEFAULTS, **self.option_defaults, **options}
        size, grayscale = values["size"], values["grayscale"]
        on_error, max_image_pixels = values["on_error"], values["max_image_pixels"]
        if max_image_pixels is not None and max_image_pixels < 1:
            raise DollError(f"max_image_pixels must be >= 1 or None, got {max_image_pixels}")
        self.max_image_pixels = max_image_pixels
        self.root = expand_home(root, f"{type(self).__name__} root")
        if not self.root.is_dir():
            raise DollError(f"{type(self).__name__}: dataset folder not found: {self.root}")
        self.size = parse_size(size)
        self.grayscale = bool(grayscale)
        self.on_error = check_choice("on_error", on_error, ON_ERROR_CHOICES)
        #: skip records of this process (worker processes report theirs through batches)
        self.skipped: list[SkippedSample] = []
        #: where decoded, resized images are kept (:mod:`doll_core.data.decoded`); a stage
        #: sets it with :func:`~doll_core.data.decoded.attach_image_cache`
        self.image_cache: DecodedImages | None = None

    def read_sized(self, path: Path) -> tuple[torch.Tensor, ImageFacts]:
        """The image at ``path`` as this reader hands it on: ``float32 [C, H, W]`` in
        [0, 1] at the reader's size, rounded to its file's depth, through the image cache
        when there is one; and the file's facts."""
        return read_levels(
            path,
            grayscale=self.grayscale,
            size=self.size,
            max_pixels=self.max_image_pixels,
            cache=self.image_cache,
        )

    def __len__(self) -> int:
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        """A stable id of sample ``index`` (its relative path or file stem)."""
        raise NotImplementedError

    def load(self, index: int) -> dict[str, Any]:
        """Read sample ``index``; raise :class:`ImageReadError` when a file is unreadable."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """Counts for ``doll data inspect``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        try:
            return self.load(index)
        except ImageReadError as exc:
            if self.on_error == "fail":
                raise ImageReadError(
                    exc.path,
                    f"{exc.reason} (sample {self.sample_id(index)!r}; "
                    "set on_error='skip' to record it and go on)",
                ) from None
            record = SkippedSample(self.sample_id(index), exc.path, exc.reason)
            self.skipped.append(record)
            return record


class LabelledImages(ImageDataset):
    """A classification reader: subclasses implement :meth:`image_path` and
    :meth:`label_arrays`; :meth:`load` reads, resizes and labels the image."""

    option_defaults: ClassVar[Mapping[str, Any]] = {"size": 224}

    def image_path(self, index: int) -> Path:
        """The file of sample ``index``; :class:`ImageReadError` where there is none."""
        raise NotImplementedError

    def label_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``float32 [14]`` and label mask ``bool [14]`` of sample ``index``."""
        raise NotImplementedError

    def load(self, index: int) -> dict[str, Any]:
        """``image`` ``[C, H, W]`` in [0, 1], ``labels`` ``[14]``, ``label_mask`` ``[14]``,
        ``id``."""
        image, _ = self.read_sized(self.image_path(index))
        labels, mask = self.label_arrays(index)
        return {
            "image": image,
            "labels": torch.from_numpy(labels.copy()),
            "label_mask": torch.from_numpy(mask.copy()),
            "id": self.sample_id(index),
        }


def bytes_array(values: Sequence[bytes]) -> np.ndarray:
    """``values`` as one compact numpy array of fixed-width bytes ``[N]`` (no per-row
    Python objects, so DataLoader workers share it); an empty ``S1`` array for none."""
    return np.array(values, dtype=np.bytes_) if len(values) else np.array([], dtype="S1")


def is_plain_file_name(name: str) -> bool:
    """Whether ``name`` is one file's name: not empty, no folder separator, no NUL."""
    return bool(name) and not any(c in name for c in ("/", "\\", "\x00"))


def to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def collate_samples(batch: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
    """Batch the readable samples (``default_collate``), list their ``report`` dicts under
    ``"reports"`` and the skipped samples under ``"skipped"``. A batch whose samples were
    all skipped holds only ``"skipped"``."""
    good = [sample for sample in batch if not isinstance(sample, SkippedSample)]
    reports = [{"id": s["id"], **s["report"]} for s in good if "report" in s]
    good = [{k: v for k, v in sample.items() if k != "report"} for sample in good]
    collated: dict[str, Any] = default_collate(good) if good else {}
    if reports:
        collated["reports"] = reports
    collated["skipped"] = [sample for sample in batch if isinstance(sample, SkippedSample)]
    return collated


_WORKER = "in DataLoader worker process"


def batches_from(loader: Iterable[T]) -> Iterator[T]:
    """The batches of ``loader``, with a :class:`DollError` raised in a DataLoader worker
    (an unreadable image with ``on_error="fail"``) given back as the same one-line
    :class:`DollError`. torch re-raises a worker's exception by rebuilding it from its
    traceback text, which for :class:`ImageReadError` (two arguments) becomes a
    ``RuntimeError`` holding the whole traceback: the CLI would print that, not the
    message."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (RuntimeError, DollError) as exc:
            text = str(exc)
            if _WORKER not in text or "Error: " not in text:
                raise
            last = text.strip().splitlines()[-1]  # "package.module.ClassName: message"
            kind, _, message = last.partition(": ")
            if not kind.endswith(("DollError", "ImageReadError", "PluginError")):
                raise
            raise DollError(message) from None
        yield batch
