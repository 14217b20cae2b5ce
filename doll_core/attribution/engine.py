"""The multi-target gradient engine behind every gradient-based explainer.

captum attributes one target per call, so 14 observations cost 14 sets of forward and
backward passes. The engine does one forward pass per chunk of (possibly perturbed or
interpolated) input rows and then one backward pass per target *slot*: with ``targets``
``[B, T]``, backward ``j`` differentiates ``sum_i logit[i, targets[i, j]]``, which gives
every row the gradient of its own ``j``-th target at once (rows do not interact in eval
mode). Slots where no image of a chunk has a target are skipped, and images are sorted by
their number of targets so that chunks of few-target images need few backward passes.
Chunks are sized by a row count or a memory budget.

On a GPU three options speed the passes up (see :class:`EngineOptions`): ``compile``
(``torch.compile``; every pass is then padded to one row count, so the model compiles
once, whatever the batch size), ``autocast="fp16"`` (with the gradient
scaled by :data:`FP16_GRADIENT_SCALE` so that small gradients do not underflow in half
precision) and ``channels_last``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

import torch
from pydantic import ConfigDict, Field
from torch import nn

from doll_core.attribution.stem import fp32_stem_view
from doll_core.compiling import CompiledModule, compiled
from doll_core.configuration import KEY_WHEN_CHANGED, NEVER_IN_KEY
from doll_core.errors import DollError

#: ``make_rows(images_chunk [k, C, H, W], image_index [k], samples slice) -> rows [k*s, C, H, W]``
#: (image-major: the rows of image 0 first).
RowMaker = Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor]


def _option(default: Any, help: str, key: dict[str, Any]) -> Any:
    """A field of :class:`EngineOptions`: its default, its help and how it enters stage
    keys (:func:`~doll_core.configuration.in_key`; stated for each option, as a missed key
    would reuse stages made another way), in the dataclass field's metadata."""
    return dataclasses.field(default=default, metadata={"description": help, **key})


@dataclass(frozen=True)
class EngineOptions:
    """How the engine batches, computes and checks: execution options, shared by every
    engine explainer and passed to it once, as ``engine=`` (an experiment's
    ``[explanation.engine]``). They never change what a map means, only how fast it is made
    and what is measured about it; those that move its values by more than rounding (the
    row count and memory budget change how rows are batched, autocast and the fp32 stem
    its precision) enter stage keys and a label store's hash when changed; the others
    never do. Each option's help is its field's ``description``.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    max_rows: Annotated[int, Field(ge=1)] | None = _option(
        64, "rows (images x samples) per forward pass", KEY_WHEN_CHANGED
    )
    memory_budget_mb: Annotated[int | float, Field(gt=0)] | None = _option(
        None,
        "derive max_rows from a budget instead (activation memory estimated from one row)",
        KEY_WHEN_CHANGED,
    )
    autocast: Literal["fp16", "bf16"] | None = _option(
        None,
        "reduced precision, only with its error against fp32 measured and shown",
        KEY_WHEN_CHANGED,
    )
    compile: bool = _option(
        False,
        "run the model through doll_core.compiling.compiled (opt-in; its compile time is "
        "reported and a model that does not compile runs eagerly)",
        NEVER_IN_KEY,
    )
    channels_last: bool = _option(
        False,
        "rows in the channels-last memory format (give the model the same format; pays on "
        "GPUs with tensor cores)",
        NEVER_IN_KEY,
    )
    pad_rows: Annotated[int, Field(ge=1)] | None = _option(
        None,
        "with compile, pad passes to at least this many rows (default: a full chunk), so "
        "that runs at several step counts share one compiled graph",
        NEVER_IN_KEY,
    )
    fp32_stem: bool = _option(
        False,
        "under autocast, run the model's first convolution in fp32 and pass its output on "
        "in fp32 (doll_core.attribution.stem: that output's rounding moves the maps most)",
        KEY_WHEN_CHANGED,
    )
    autocast_check_every: Annotated[int, Field(ge=1)] = _option(
        1,
        "measure the autocast error against fp32 on every N-th call (the first included; "
        "reduced precision is never left unmeasured)",
        NEVER_IN_KEY,
    )
    completeness: bool = _option(
        True,
        "Integrated Gradients measures its completeness delta (two forward passes of the "
        "batch); off: never",
        NEVER_IN_KEY,
    )
    completeness_every: Annotated[int, Field(ge=1)] = _option(
        1, "measure the completeness delta on every N-th call", NEVER_IN_KEY
    )

    def __post_init__(self) -> None:
        """The checks of an options object made in Python (pydantic checks the same when
        it reads ``[explanation.engine]``)."""
        if self.autocast not in (None, "fp16", "bf16"):
            raise DollError(f"autocast must be None, 'fp16' or 'bf16', got {self.autocast!r}")
        if int(self.autocast_check_every) < 1:
            raise DollError(
                "autocast_check_every must be >= 1 (reduced precision is never left "
                f"unmeasured), got {self.autocast_check_every}"
            )
        if int(self.completeness_every) < 1:
            raise DollError(f"completeness_every must be >= 1, got {self.completeness_every}")

    def changed(self) -> dict[str, Any]:
        """The options that differ from the defaults."""
        default = EngineOptions()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


def engine_or_default(engine: Any) -> EngineOptions:
    """``engine``, checked to be an :class:`EngineOptions`, or the defaults for ``None``
    (what every explainer that takes ``engine=`` does with it)."""
    if engine is None:
        return EngineOptions()
    if not isinstance(engine, EngineOptions):
        raise DollError(
            f"engine must be an EngineOptions, got {type(engine).__name__} (in an experiment, "
            "engine options go in [explanation.engine], not among an explainer's parameters)"
        )
    return engine


#: fp16 backward passes multiply the target logit by this and divide the gradient by it
#: (as ``GradScaler`` does for training), so that gradients under fp16's 6e-8 do not flush
#: to zero; a power of two, so the division is exact.
FP16_GRADIENT_SCALE = 1024.0


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the duration; restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(was_training)


def activation_bytes_per_row(model: nn.Module, row: torch.Tensor) -> int:
    """Bytes of module outputs one input row produces (what backward keeps), measured."""
    total = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(row[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total + row[:1].numel() * row.element_size()


_ROW_BYTES = "_doll_activation_bytes_per_row"


def cached_activation_bytes_per_row(model: nn.Module, row: torch.Tensor) -> int:
    """:func:`activation_bytes_per_row`, measured once per model and row shape and dtype
    (kept in the model's ``__dict__``), so that every batch does not pay an extra
    forward pass with a hook on every module."""
    cache: dict[tuple[object, ...], int] = model.__dict__.setdefault(_ROW_BYTES, {})
    key = (tuple(row.shape[1:]), row.dtype)
    if key not in cache:
        cache[key] = activation_bytes_per_row(model, row)
    return cache[key]


def rows_per_chunk(model: nn.Module, example: torch.Tensor, options: EngineOptions) -> int:
    """The number of rows per forward pass that ``options`` allows."""
    if options.memory_budget_mb is not None:
        # activations, gradients, slack
        per_row = 3 * cached_activation_bytes_per_row(model, example)
        return max(1, int(options.memory_budget_mb * 2**20 // max(per_row, 1)))
    return max(1, int(options.max_rows or 64))


def _autocast(device: torch.device, mode: str | None) -> contextlib.AbstractContextManager[object]:
    if mode is None:
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[mode]
    return torch.autocast(device.type, dtype=dtype)


def network_to_run(model: nn.Module, options: EngineOptions) -> nn.Module:
    """The module the engine's passes run (compiled or not): ``model``, or its fp32-stem
    view (:func:`doll_core.attribution.stem.fp32_stem_view`) under ``autocast`` with
    ``fp32_stem``."""
    return fp32_stem_view(model) if options.autocast and options.fp32_stem else model


@dataclass(frozen=True)
class _ChunkPlan:
    """How one call's rows are cut into passes: ``images`` per chunk, ``samples`` of each
    image per pass, and ``rows``, the row count every pass is padded to (0: none)."""

    images: int
    samples: int
    rows: int


def _chunk_plan(
    model: nn.Module, images: torch.Tensor, n_samples: int, options: EngineOptions
) -> _ChunkPlan:
    """The chunks for ``images [B, C, H, W]`` with ``n_samples`` rows each under
    ``options``' row limit or memory budget."""
    limit = rows_per_chunk(model, images[:1], options)
    images_per_chunk = max(1, limit // n_samples)
    samples_per_chunk = min(n_samples, limit)
    # compiled code is specialised on shapes: every pass is padded to one row count (the
    # same for every batch size), so that a model compiles once
    fixed_rows = (
        max(images_per_chunk * samples_per_chunk, options.pad_rows or 0) if options.compile else 0
    )
    return _ChunkPlan(images_per_chunk, samples_per_chunk, fixed_rows)


def _pass_rows(
    rows: torch.Tensor, row_targets: torch.Tensor, fixed_rows: int, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows [n, C, H, W]`` and ``row_targets long [n, T]`` padded to ``fixed_rows`` (zero
    rows with no target), in the memory format asked for, rows requiring grad."""
    used = rows.shape[0]
    if used < fixed_rows:
        rows = torch.cat([rows, rows.new_zeros(fixed_rows - used, *rows.shape[1:])])
        row_targets = torch.cat(
            [row_targets, row_targets.new_full((fixed_rows - used, row_targets.shape[1]), -1)]
        )
    if channels_last and rows.dim() == 4:
        rows = rows.contiguous(memory_format=torch.channels_last)
    rows.requires_grad_(True)
    return rows, row_targets


def _slot_objectives(
    logits: torch.Tensor, row_targets: torch.Tensor, live: list[int]
) -> list[torch.Tensor]:
    """For each live slot ``j``: ``sum_r logits[r, row_targets[r, j]]`` over the rows ``r``
    with a target in that slot (``logits [N, classes]``, ``row_targets long [N, T]``)."""
    objectives = []
    for j in live:
        wanted = row_targets[:, j] >= 0
        picked = logits.gather(1, row_targets[:, j].clamp(min=0)[:, None])[:, 0]
        objectives.append((picked * wanted).sum())
    return objectives


def _slot_gradient_sums(
    objectives: list[torch.Tensor],
    rows: torch.Tensor,
    scale: float,
    summed: Callable[[torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """``summed(d objective / d rows)`` for each objective, one backward pass each. With a
    ``scale`` (fp16) the objective is scaled and the gradient divided back; a gradient that
    overflowed even so is computed again unscaled. ``rows [N, C, H, W]``."""
    sums, finite = [], []
    for position, objective in enumerate(objectives):
        # the scaled graph is kept to the end: an overflow is redone below
        keep = position < len(objectives) - 1 or scale != 1.0
        (grad,) = torch.autograd.grad(objective * scale, rows, retain_graph=keep)
        if scale != 1.0:
            finite.append(torch.isfinite(grad).all())
            grad = grad / scale
        sums.append(summed(grad))
    # one host read per pass (not per slot): did any fp16 gradient overflow?
    flags = torch.stack(finite).tolist() if finite else []
    redo = [position for position, ok in enumerate(flags) if not ok]
    for count, position in enumerate(redo):  # unscaled fp16 gradients
        (grad,) = torch.autograd.grad(
            objectives[position], rows, retain_graph=count < len(redo) - 1
        )
        sums[position] = summed(grad)
    return sums


@dataclass(frozen=True)
class _ImageSums:
    """A pass's gradient ``[N, C, H, W]`` -> the weighted sums over each image's rows
    ``[images, C, H, W]``: the first ``used`` rows (the rest pad), ``transform`` applied,
    each row weighted by ``weights [used, 1, 1, 1]``, ``per_image`` rows per image."""

    used: int
    images: int
    per_image: int
    weights: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad[: self.used].float()
        if self.transform is not None:
            grad = self.transform(grad)
        return (grad * self.weights).view(self.images, self.per_image, *grad.shape[1:]).sum(1)


@dataclass(frozen=True)
class _Pass:
    """One forward pass of a chunk's ``rows [N, C, H, W]`` (targets ``long [N, T]``) and
    the backward passes of its ``live`` slots; calling it gives their per-image sums."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    rows: torch.Tensor
    row_targets: torch.Tensor
    live: list[int]
    summed: _ImageSums
    device: torch.device
    options: EngineOptions

    def __call__(self) -> list[torch.Tensor]:
        with torch.enable_grad(), _autocast(self.device, self.options.autocast):
            logits = self.forward(self.rows).float()
        objectives = _slot_objectives(logits, self.row_targets, self.live)
        scale = FP16_GRADIENT_SCALE if self.options.autocast == "fp16" else 1.0
        return _slot_gradient_sums(objectives, self.rows, scale, self.summed)


def slot_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    n_samples: int,
    make_rows: RowMaker,
    *,
    sample_weights: torch.Tensor | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    options: EngineOptions | None = None,
) -> torch.Tensor:
    """``sum_s w_s * transform(d logit[targets[b, j]] / d row(b, s))`` for every image ``b``
    and slot ``j``.

    :param images: ``[B, C, H, W]``. :param targets: ``long [B, T]``, ``-1`` = none.
    :param n_samples: rows per image (interpolation steps, noise samples, or 1).
    :param make_rows: builds the rows of a chunk of images for a range of samples.
    :param sample_weights: ``[n_samples]`` (default: all 1).
    :returns: float32 ``[B, T, C, H, W]``; zeros where the target is ``-1``.
    """
    options = options or EngineOptions()
    net = network_to_run(model, options)
    forward: Callable[[torch.Tensor], torch.Tensor] = compiled(net) if options.compile else net
    batch, slots = targets.shape
    result = torch.zeros(batch, slots, *images.shape[1:], dtype=torch.float32, device=images.device)
    weights = (sample_weights if sample_weights is not None else torch.ones(n_samples)).to(
        images.device, torch.float32
    )
    # images with most targets first. The chunk plan is made on the host, from one copy of
    # the (small) targets and of the order, both taken here at the start of the call, so
    # that the passes below are queued without waiting on the GPU (a host read of a CUDA
    # tensor waits for every pass queued before it)
    order = torch.argsort((targets >= 0).sum(dim=1), descending=True, stable=True)
    host_targets, host_order = targets.detach().cpu(), order.cpu()
    if batch == 0 or slots == 0 or not bool((host_targets >= 0).any()):
        return result
    with frozen_eval(model):
        if net is not model:
            net.eval()  # its own copies of the modules on the path to the stem
        plan = _chunk_plan(model, images, n_samples, options)
        for start in range(0, batch, plan.images):
            host_index = host_order[start : start + plan.images]
            live = (host_targets[host_index] >= 0).any(dim=0).nonzero().flatten().tolist()
            if not live:
                continue
            index = order[start : start + plan.images]
            chunk_targets = targets[index]
            for s0 in range(0, n_samples, plan.samples):
                samples = slice(s0, min(n_samples, s0 + plan.samples))
                per_image = samples.stop - samples.start
                made = make_rows(images[index], index, samples).detach()
                rows, row_targets = _pass_rows(
                    made,
                    chunk_targets.repeat_interleave(per_image, dim=0),
                    plan.rows,
                    options.channels_last,
                )
                w = weights[samples].repeat(len(index)).view(-1, *([1] * (rows.dim() - 1)))
                summed = _ImageSums(made.shape[0], len(index), per_image, w, transform)
                step = _Pass(forward, rows, row_targets, live, summed, images.device, options)
                if isinstance(forward, CompiledModule):
                    # torch compiles the backward at the first one: fall back there too
                    sums = forward.guarded_backward(step)
                else:
                    sums = step()
                for j, summed_slot in zip(live, sums, strict=True):
                    result[index, j] += summed_slot
    result *= (targets >= 0).view(batch, slots, *([1] * (images.dim() - 1)))
    return result
