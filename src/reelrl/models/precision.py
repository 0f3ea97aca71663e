"""Mixed precision for training: half-precision compute, fp32 master weights.

A checkpoint loaded with ``model.dtype: bfloat16`` (or ``float16``, or
``auto`` on a bf16 checkpoint) would otherwise train in that dtype, AdamW
included: an update smaller than half a bf16 ulp of its weight (about
``|w| * 2**-9``; for a weight of 0.02, 4e-5) rounds away, so at the papers'
learning rates (Video-R1: 1e-6) almost no weight changes. With
``model.master_weights: float32`` (the default) the trainable parameters are
held in float32 (what AdamW updates and checkpoints store), frozen ones stay
in the loaded dtype, and every forward pass of the stage runs under
``torch.autocast`` in the loaded dtype: matmuls and attention in bf16,
reductions and normalisations in fp32. This is torch AMP as the HF Trainer
uses it with ``bf16=True`` (fp32 parameters, bf16 autocast), and what
DeepSpeed's / Megatron's bf16 optimizers achieve with a separate fp32 copy;
under FSDP2 on GPU, ``parallel.mixed_precision`` additionally all-gathers the
fp32 shards as bf16 (``MixedPrecisionPolicy``). Memory per trainable
parameter: 4 (weight) + 4 (gradient) + 8 (AdamW moments) bytes.

``model.master_weights: model`` trains in the loaded dtype itself (pure bf16:
8 bytes per trainable parameter instead of 16, with the rounding above).

The final model of a stage is saved in the loaded dtype (the fp32 masters
rounded once), like the checkpoint it started from.
"""

from __future__ import annotations

import contextlib
import torch
from torch import nn

HALF = (torch.bfloat16, torch.float16)


def loaded_half_dtype(model: nn.Module) -> torch.dtype | None:
    """The half-precision dtype most of ``model``'s floating-point weights have, or None for a full-precision model."""
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    if not counts:
        return None
    dtype = max(counts, key=counts.__getitem__)
    return dtype if dtype in HALF else None


def upcast_trainable(model: nn.Module) -> int:
    """Hold every trainable half-precision parameter of ``model`` in float32, in place; returns how many changed."""
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype in HALF:
            p.data = p.data.float()
            n += 1
    return n


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)

