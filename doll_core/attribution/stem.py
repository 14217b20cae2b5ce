"""The input layer in fp32 under autocast: a view of a model that shares its parameters.

Under fp16 or bf16 autocast, the first convolution's output is computed and stored in
half precision, and every later layer, ReLU and max-pool works from those rounded
features. That rounding moves IG maps more than all the other half-precision work
together. Measured on this project's CPU, on the quick start's trained ResNet-18 in bf16,
with IG at 16 steps on 8 phantom images and max-abs error against strict fp32:

| the first convolution | error |
|---|---:|
| in bf16, like every other layer | 10.9% |
| in fp32, its output passed on in fp32 (this module) | 1.4% |
| in fp32, its output rounded to bf16 on the way forward (the gradient exact) | 15.7% |
| in fp32, only the gradient at its output rounded to bf16 | 1.4% |
| in bf16, its output then cast to fp32 | 10.2% |

So what matters is the precision of the stem's output on the forward pass; the backward
pass is not the cause. Operations that promote carry that fp32 output on: a residual
addition (ResNet's ``layer1``) or DenseNet's concatenations (its whole first dense block
keeps fp32 features). The convolutions in between still compute in half precision. The
fp32 region is therefore wider than one convolution, and its GPU cost is not measured
(docs/gpu.md). With fp16 on the same CPU, the error against fp32 falls:

- the quick start's trained ResNet-18: from 2.5% to 0.9%;
- its trained tiny CNN: from 15.5% to 2.6%;
- the random-weight ResNet-18 at 64²: from 11.2% to 6.7%.

:func:`fp32_stem_view` makes the view without touching the model. Only the modules on the
path to the stem are copied, shallowly; every parameter, buffer and other module is the
model's own, so the view follows training and ``load_state_dict`` on the model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_ATTRIBUTE = "_doll_fp32_stem_view"


class FP32Module(nn.Module):
    """Runs ``module`` in fp32, whatever the caller's autocast: autocast off, the input
    cast to fp32, and TF32 off for cuDNN (PyTorch allows TF32 convolutions by default,
    which round operands to a 10-bit mantissa, as fp16 does). ``[N, C, H, W]`` in, the
    module's fp32 output out.

    The forward pass is never compiled (``torch.compiler.disable``): the cuDNN switch is a
    global flag that must hold while the convolution runs, which only eager code ensures.
    Under ``compile`` the model is compiled around it, in two graphs. The backward pass of
    the convolution runs later, under the global flags; rounding the gradient there is
    harmless (see the module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cudnn = torch.backends.cudnn
        with (
            torch.autocast(x.device.type, enabled=False),
            cudnn.flags(
                enabled=cudnn.enabled,
                benchmark=cudnn.benchmark,
                deterministic=cudnn.deterministic,
                allow_tf32=False,
            ),
        ):
            return self.module(x.float())


def stem_name(model: nn.Module) -> str | None:
    """The qualified name of ``model``'s first ``Conv2d`` in registration order (the stem
    of every built-in backbone), or ``None`` when it has none."""
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def fp32_stem_view(model: nn.Module) -> nn.Module:
    """``model`` with its stem (see :func:`stem_name`) wrapped in :class:`FP32Module`,
    made once per model and kept in its ``__dict__`` (not a child: ``state_dict`` does not
    change), and made again when a module of the model was replaced since. A model
    without a ``Conv2d`` is returned as it is."""
    name = stem_name(model)
    if name is None:
        return model
    cached = model.__dict__.get(_ATTRIBUTE)
    if cached is not None and cached[0] == name and _still_matches(model, cached[1], name):
        return cached[1]
    parts = name.split(".")
    view = _path_copy(model)
    parent = view
    for part in parts[:-1]:
        child = parent._modules[part]
        assert child is not None
        parent._modules[part] = parent = _path_copy(child)
    stem = parent._modules[parts[-1]]
    assert stem is not None
    parent._modules[parts[-1]] = FP32Module(stem)
    model.__dict__[_ATTRIBUTE] = (name, view)
    return view


def _still_matches(model: nn.Module, view: nn.Module, name: str) -> bool:
    """Whether ``view`` still runs ``model``'s modules: along the path to the stem, the
    same children (the path's own copies aside), and the stem wrapped is the model's.
    A module replaced in the model since the view was made (a new head, say) means a new
    view."""
    original, copied = model, view
    for part in name.split("."):
        if original._modules.keys() != copied._modules.keys():
            return False
        for key, child in original._modules.items():
            if key != part and copied._modules[key] is not child:
                return False
        next_original, next_copied = original._modules[part], copied._modules[part]
        if next_original is None or next_copied is None:
            return False
        original, copied = next_original, next_copied
    return isinstance(copied, FP32Module) and copied.module is original


def _path_copy(module: nn.Module) -> nn.Module:
    """A shallow copy with its own child table (the children are the module's own) and
    none of DoLL's per-module caches (a compiled copy of the module must not serve the
    view)."""
    duplicate = copy.copy(module)
    duplicate._modules = dict(module._modules)
    for key in [k for k in duplicate.__dict__ if k.startswith("_doll_")]:
        del duplicate.__dict__[key]
    return duplicate
