"""Opt-in ``torch.compile`` that reports its cost and falls back cleanly.

``torch.compile`` pays on a GPU (compiled DenseNet-121 forward + backward passes ran 1.7x
faster in fp32 and 3.2x in fp16 than eager on an H100; docs/gpu.md times the compiled
attribution engine on an H200) but costs a compile of about a minute and fails for some
models, backends or machines (no C++ compiler, an unsupported operation).
:class:`CompiledModule` wraps a module: its first call compiles
and is timed (``compile_seconds``); a failure while compiling is reported in a warning
and in ``fallback``, and the module then runs eagerly, with the same results, for good.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")


def _synchronize(output: Any) -> None:
    if torch.cuda.is_available() and isinstance(output, torch.Tensor) and output.is_cuda:
        torch.cuda.synchronize(output.device)


class CompiledModule(nn.Module):
    """``module`` run through ``torch.compile``, with its compile time and any fallback
    recorded.

    The wrapped module is the only registered child, so ``state_dict``, ``train()`` and
    ``eval()`` act on it; the compiled callable shares its parameters.

    A failure counts as a *compile* failure, and switches to eager for good, only when the
    same call then succeeds eagerly: a genuine error of the model (or a CUDA out-of-memory
    error) is raised as it is, and compiled code stays in use. The backward pass is
    compiled lazily by torch, at the first backward: callers run it through
    :meth:`guarded_backward`, which falls back the same way.

    :param module: the module to compile (inputs and outputs as its own).
    :param mode: ``torch.compile`` mode (``None``, ``"reduce-overhead"``,
        ``"max-autotune"``).
    :param dynamic: passed to ``torch.compile``; ``False`` (default) specialises on shapes,
        which is fastest when the caller keeps shapes fixed.
    """

    def __init__(self, module: nn.Module, mode: str | None = None, dynamic: bool = False) -> None:
        super().__init__()
        self.module = module
        self.mode = mode
        #: seconds of the first forward and the first backward (compiles included)
        self.compile_seconds: float | None = None
        #: why compiling failed (the module then runs eagerly); ``None`` when it did not
        self.fallback: str | None = None
        self.calls = 0
        self.backward_done = False
        try:
            # not registered as a child: its parameters are the module's own
            self.__dict__["_compiled"] = torch.compile(module, mode=mode, dynamic=dynamic)
        except Exception as exc:  # torch.compile unsupported here (old torch, new Python)
            self._fall_back(exc)

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        """Copies of a model do not share its compiled code: :func:`compiled` makes a fresh
        wrapper for the copy when it is needed."""
        return None

    @property
    def compiled(self) -> bool:
        """Whether calls run compiled code (False after a fallback)."""
        return self.fallback is None

    def _fall_back(self, exc: BaseException) -> None:
        self.fallback = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(
            f"torch.compile failed for {type(self.module).__name__} ({self.fallback}); "
            "running eagerly",
            RuntimeWarning,
            stacklevel=3,
        )

    def _add_seconds(self, seconds: float) -> None:
        self.compile_seconds = (self.compile_seconds or 0.0) + seconds

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.fallback is not None:
            return self.module(*args, **kwargs)
        first = self.calls == 0
        started = time.perf_counter()
        try:
            output = self.__dict__["_compiled"](*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            output = self.module(*args, **kwargs)  # raises if the model itself is at fault
            self._fall_back(exc)
            return output
        self.calls += 1
        if first:
            _synchronize(output)
            self._add_seconds(time.perf_counter() - started)
        return output

    def guarded_backward(self, step: Callable[[], T]) -> T:
        """``step()``, a forward and backward pass through this module. The first time it
        is timed (torch compiles the backward graph then) and, if it fails, run again
        eagerly: a compile failure when that succeeds, the step's own error when not."""
        if self.fallback is not None or self.backward_done:
            return step()
        forward_compiled_inside = self.calls == 0
        started = time.perf_counter()
        try:
            result = step()
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            self.fallback = "pending"  # the rerun goes eagerly; a failure there is genuine
            try:
                result = step()
            except BaseException:
                self.fallback = None
                raise
            self.fallback = None
            self._fall_back(exc)
            return result
        self.backward_done = True
        seconds = time.perf_counter() - started
        if forward_compiled_inside:  # the first forward is part of this call: count it once
            self.compile_seconds = seconds
        else:
            self._add_seconds(seconds)
        return result

    def report(self) -> dict[str, Any]:
        """``{"compiled", "compile_seconds", "fallback", "mode"}`` for a run's metrics."""
        return {
            "compiled": self.compiled,
            "compile_seconds": None
            if self.compile_seconds is None
            else round(self.compile_seconds, 2),
            "fallback": self.fallback,
            "mode": self.mode,
        }


_ATTRIBUTE = "_doll_compiled"


def compiled(module: nn.Module, mode: str | None = None) -> CompiledModule:
    """The :class:`CompiledModule` of ``module``, made once per module and mode and then
    reused, so that repeated calls (one per batch) compile only once. It is kept in the
    module's ``__dict__`` (not as a child: ``state_dict`` does not change)."""
    cached = module.__dict__.get(_ATTRIBUTE)
    if not isinstance(cached, CompiledModule) or cached.mode != mode:
        cached = CompiledModule(module, mode=mode)
        module.__dict__[_ATTRIBUTE] = cached
    return cached


def forget(module: nn.Module) -> None:
    """Drop ``module``'s :class:`CompiledModule`, so that the next :func:`compiled` call
    compiles (and times) afresh; used by benchmarks that compare compiled variants."""
    module.__dict__.pop(_ATTRIBUTE, None)
