"""Several classification datasets read as one (``dataset = "multi"``).

Each source is a table ``{name, dataset, root, options, splits}``: ``name`` prefixes its
image ids (``nih:00000001_000.png``), so a label store made from the whole records which
source each image came from; ``root`` is relative to the multi reader's ``root`` unless
absolute; ``splits`` maps DoLL's split names to the source's (default: the same name, so
``train`` and ``valid`` work for CheXpert, NIH, PadChest and MIMIC-CXR alike). Every image
keeps its source's labels and label mask, so an observation a source does not label
stays out of the loss for its images only.

In an experiment::

    [data.classification]
    root = "/data"
    dataset = "multi"
    options = {sources = [
        {name = "chexpert", dataset = "chexpert", root = "chexpert"},
        {name = "nih", dataset = "nih", root = "nih"},
    ]}
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Unpack

from doll_core.data.mapping import label_rules_key
from doll_core.data.samples import ImageDataset, ReaderOptions
from doll_core.errors import DollError
from doll_core.registry import get_registry

#: the keys of a source table
SOURCE_KEYS = ("name", "dataset", "root", "options", "splits")


def _source(entry: Any, position: int) -> dict[str, Any]:
    """One source table, checked: its keys, a name without ``:``, a dataset, a root."""
    where = f"sources[{position}]"
    if not isinstance(entry, Mapping):
        raise DollError(f"{where} must be a table {{name, dataset, root, options, splits}}")
    unknown = sorted(set(entry) - set(SOURCE_KEYS))
    if unknown:
        raise DollError(f"{where} has unknown keys {unknown}; it takes {', '.join(SOURCE_KEYS)}")
    name, dataset = entry.get("name"), entry.get("dataset")
    if not isinstance(name, str) or not name or ":" in name:
        raise DollError(f"{where}.name must be a non-empty name without ':', got {name!r}")
    if not isinstance(dataset, str) or dataset == "multi":
        raise DollError(f"{where}.dataset must name a classification reader, got {dataset!r}")
    if not isinstance(entry.get("root"), str | Path):
        raise DollError(f"{where}.root must be a folder")
    for key in ("options", "splits"):
        if not isinstance(entry.get(key, {}), Mapping):
            raise DollError(f"{where}.{key} must be a table")
    return dict(entry)


class MultiSource(ImageDataset):
    """The concatenation of several classification readers, ids prefixed by source."""

    option_defaults: ClassVar[Mapping[str, Any]] = {"size": 224}

    def __init__(
        self,
        root: str | Path,
        *,
        sources: Sequence[Mapping[str, Any]],
        split: str = "train",
        **options: Unpack[ReaderOptions],
    ) -> None:
        """:param root: the folder the sources' relative roots are under.
        :param sources: the source tables (see the module docstring), at least one.
        :param split: DoLL's split name, mapped per source by its ``splits``.
        :param options: :class:`ReaderOptions`; those given are passed on to every source,
            beside its own ``options``.
        :raises DollError: a source that is not a reader on :class:`ImageDataset` (its
            ``load``, which reads a sample without the skip handling, is what multi reads)."""
        super().__init__(root, **options)
        if not isinstance(sources, Sequence) or isinstance(sources, str) or not sources:
            raise DollError("multi: sources must be a list of at least one source table")
        checked = [_source(entry, k) for k, entry in enumerate(sources)]
        names = [entry["name"] for entry in checked]
        if len(set(names)) != len(names):
            raise DollError(f"multi: source names must differ, got {names}")
        registry = get_registry()
        self.split = split
        self.names: list[str] = names
        self.parts: list[Any] = []
        for entry in checked:
            part_root = Path(entry["root"])
            part_root = part_root if part_root.is_absolute() else self.root / part_root
            own = dict(entry.get("options") or {})
            splits = dict(entry.get("splits") or {})
            part_split = splits.get(split, split)
            try:
                part = registry.create(
                    "dataset", entry["dataset"], root=part_root, split=part_split,
                    **options, **own,
                )  # fmt: skip
            except DollError as exc:
                raise DollError(f"multi source {entry['name']!r}: {exc}") from None
            if not isinstance(part, ImageDataset):
                raise DollError(
                    f"multi source {entry['name']!r}: dataset {entry['dataset']!r} is not a "
                    "classification reader on doll_core.data.samples.ImageDataset, which multi "
                    "needs (it reads each source's load, sample_id and summary)"
                )
            self.parts.append(part)
        self._starts = [0]
        for part in self.parts:
            self._starts.append(self._starts[-1] + len(part))

    @classmethod
    def label_rules(cls, **options: Any) -> str | None:
        """The sources' label rules, by name (see
        :func:`~doll_core.data.mapping.label_rules_key`), or ``None`` when none has any."""
        registry = get_registry()
        rules = {}
        for position, entry in enumerate(options.get("sources") or []):
            source = _source(entry, position)
            factory = registry.get("dataset", source["dataset"]).factory
            rules[source["name"]] = label_rules_key(factory, dict(source.get("options") or {}))
        if not any(rules.values()):
            return None
        text = json.dumps(rules, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        """``(source position, index inside it)`` of sample ``index``."""
        position = bisect.bisect_right(self._starts, index) - 1
        return position, index - self._starts[position]

    def source_of(self, index: int) -> str:
        """The name of the source sample ``index`` comes from."""
        return self.names[self._locate(index)[0]]

    def sample_id(self, index: int) -> str:
        position, inner = self._locate(index)
        return f"{self.names[position]}:{self.parts[position].sample_id(inner)}"

    def load(self, index: int) -> dict[str, Any]:
        position, inner = self._locate(index)
        sample = dict(self.parts[position].load(inner))
        sample["id"] = self.sample_id(index)
        return sample

    def summary(self) -> dict[str, Any]:
        """Images in all, and each source's own summary (per observation after its
        mapping, and what it left unmapped), by source name."""
        return {
            "split": self.split,
            "images": len(self),
            "sources": {
                name: part.summary() for name, part in zip(self.names, self.parts, strict=True)
            },
        }
