"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the policy and its frozen reference.

:func:`shard_model` shards every decoder layer and every vision block, then
the vision tower and the root, over the data-parallel ranks (``parallel.fsdp: true``). Gradients
are reduce-scattered as a *sum* (divide factor 1), which with the trainers'
global loss normalisers gives the one-process gradient of the global batch
(see :mod:`reelrl.dist.parallel`). On GPU, ``parallel.mixed_precision`` runs
bf16 compute with fp32 parameters and fp32 gradient reduction
(``MixedPrecisionPolicy``); ``parallel.cpu_offload`` keeps the shards and the
optimizer state in CPU memory (``CPUOffloadPolicy``).

FSDP2 all-gathers a layer's weights inside its forward, a collective every
rank must join. Rollouts decode for as many steps as their longest sequence,
which differs between ranks, so :func:`full_weights` gathers every layer once
before such work (rollouts, reference and old-policy log-probs) and frees the
copies after it; the trainers run the same number of update passes on every
rank (extra passes weigh 0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

from reelrl.dist.parallel import ParallelDims

SHARDED_BLOCKS = ("DecoderLayer", "VisionBlock", "VisionTransformerBlock")
"""Class-name endings of the modules sharded as one unit (Qwen2-VL / Qwen2.5-VL / Qwen3-VL layers and blocks)."""


def shard_model(model: nn.Module, dims: ParallelDims) -> nn.Module:
    """Shard ``model`` in place with FSDP2 over the data-parallel ranks; returns it."""
    if dims.sp > 1:
        raise ValueError("parallel.fsdp with parallel.sp > 1 is not supported; use a replicated policy for MR-SP")
    mesh = init_device_mesh(dims.device.type, (dims.dp,))
    kwargs: dict = {"mesh": mesh}
    if dims.mixed_precision and dims.device.type == "cuda":
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if dims.cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    blocks = [m for m in model.modules() if type(m).__name__.endswith(SHARDED_BLOCKS)]
    if not blocks:
        raise ValueError(f"parallel.fsdp: no decoder layer or vision block found in {type(model).__name__}")
    for block in blocks:
        fully_shard(block, **kwargs)
    towers = {id(m.visual): m.visual for m in model.modules() if isinstance(getattr(m, "visual", None), nn.Module)}
    for tower in towers.values():  # its own unit: the trainers call the tower outside the root's forward
        fully_shard(tower, **kwargs)
    fully_shard(model, **kwargs)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)
    # The trainers call sub-modules (the vision tower) and unshard layers before the first root forward;
    # FSDP2 wants its root initialised first, which otherwise happens lazily in that forward.
    model._get_fsdp_state()._lazy_init()
    return model


@contextlib.contextmanager
def full_weights(*models: nn.Module | None) -> Iterator[None]:
    """Within the block every FSDP-sharded module of ``models`` holds its full weights (no collectives in forward).

    A no-op for modules that are not sharded. Every rank must enter and leave it together.
    """
    sharded = [m for model in models if model is not None for m in model.modules() if isinstance(m, FSDPModule)]
    for m in sharded:
        m.unshard()
        m.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for m in sharded:
            m.reshard()
            m.set_reshard_after_forward(True)
