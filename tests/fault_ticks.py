"""Deterministic kill points inside the stages of ``doll run``, for the fault-injection suite.

A *tick* is one of the moments where a stage does something: a module forward, a sample
read, an image save, an atomic file write, the rename that ends one. While a stage's work
runs, every tick is counted under the stage's kind (``phantom``, ``classifier`` ...), so
a clean run gives the ticks of each kind (and where each stage first saved progress it
can resume from: a training state or a label shard), and a run started through
:func:`main` with ``DOLL_TEST_KILL_KIND=kind`` and ``DOLL_TEST_KILL_AT=n`` sends itself
SIGKILL at the ``n``-th tick of that kind: a kill -9 at a chosen point that no timing
decides, so the test can pick points at random from a seed and still never flake.

The child process is started as ``python -c "import fault_ticks; fault_ticks.main()" ARGS``
with this folder on ``PYTHONPATH``; ``ARGS`` are the ``doll`` command line.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

KILL_KIND = "DOLL_TEST_KILL_KIND"
KILL_AT = "DOLL_TEST_KILL_AT"
#: Files a stage resumes from.
PROGRESS = re.compile(r"^(state\.pt|shard-\d+\.pt)$")


class Ticks:
    """Counts ticks per stage kind; kills this process at tick ``kill_at`` of ``kill_kind``."""

    def __init__(self, kill_kind: str | None = None, kill_at: int | None = None) -> None:
        self.kill_kind, self.kill_at = kill_kind, kill_at
        self.counts: Counter[str] = Counter()
        self.active: str | None = None
        #: per kind: the first and last tick of each stage's work
        self.spans: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
        #: per kind: the ticks that start an atomic write of a file a stage resumes from
        self.saves: defaultdict[str, list[int]] = defaultdict(list)

    def tick(self) -> None:
        if self.active is None:
            return
        self.counts[self.active] += 1
        if self.active == self.kill_kind and self.counts[self.active] == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def after_progress(self, kind: str) -> list[int]:
        """The ticks of ``kind`` at which a stage has saved progress (its first save was
        renamed into place: 2 ticks after the write began) and has not finished; the whole
        stage where it never saves any (the phantom, written aside)."""
        points: list[int] = []
        for first, last in self.spans[kind]:
            saved = [tick for tick in self.saves[kind] if first <= tick <= last]
            points += range(min(saved) + 2 if saved else first, last + 1)
        return points


@contextmanager
def ticking(ticks: Ticks) -> Iterator[Ticks]:
    """Count ticks (and kill where asked) while the context is open."""
    import PIL.Image
    import torch

    import doll_core.atomic
    from doll_core.data.samples import ImageDataset
    from doll_core.experiment.stages import StageCache

    def counted(original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ticks.tick()
            return original(*args, **kwargs)

        return wrapper

    run = StageCache.run

    def watched_run(self: StageCache, kind: str, label: str, *args: Any, **kwargs: Any) -> Any:
        settings, inputs, work = args[:3]

        def work_of_kind(folder: Path, resuming: bool) -> Any:
            ticks.active = kind
            first = ticks.counts[kind] + 1
            try:
                return work(folder, resuming)
            finally:
                ticks.spans[kind].append((first, ticks.counts[kind]))
                ticks.active = None

        return run(self, kind, label, settings, inputs, work_of_kind, *args[3:], **kwargs)

    atomic_write = counted(doll_core.atomic.atomic_write)

    def watched_write(path: str | Path, write: Any) -> None:
        if ticks.active is not None and PROGRESS.match(Path(path).name):
            ticks.saves[ticks.active].append(ticks.counts[ticks.active] + 1)
        atomic_write(path, write)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StageCache, "run", watched_run)
        patch.setattr(torch.nn.Module, "__call__", counted(torch.nn.Module.__call__))
        patch.setattr(ImageDataset, "__getitem__", counted(ImageDataset.__getitem__))
        patch.setattr(PIL.Image.Image, "save", counted(PIL.Image.Image.save))
        patch.setattr(doll_core.atomic, "atomic_write", watched_write)
        patch.setattr(os, "replace", counted(os.replace))
        yield ticks


def main() -> None:
    """``doll`` with the kill point of the environment (see the module docstring)."""
    from doll_core.cli import main as doll

    ticks = Ticks(os.environ[KILL_KIND], int(os.environ[KILL_AT]))
    with ticking(ticks):
        doll(sys.argv[1:])
