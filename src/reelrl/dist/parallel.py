"""How a run is spread over processes: the ``parallel:`` recipe section and the :class:`ParallelDims` object.

The trainers see distribution only through a :class:`ParallelDims` (as
torchtitan's trainer sees its ``ParallelDims``): the world, the data-parallel
(dp) and sequence-parallel (sp) groups, the rank-0 predicate, and the few
collectives a step needs (share out a batch, gather per-group statistics,
sum a count, reduce the gradients). With one process every collective is the
identity, so the single-process code path is the distributed one with
``world == 1``.

Layout: ``world = dp * sp``; global rank ``r = dp_rank * sp + sp_rank``, so an
SP group is ``sp`` consecutive ranks (one node's GPUs) and a DP group takes one
rank of each SP group. Ranks of one SP group work on the same prompts (a long
video's frames and tokens are split over them, MR-SP); DP groups split the
prompts of a step.

Gradient convention (with :mod:`reelrl.dist.env`): each dp rank computes the
loss of its prompts with the *global* normalisers (token / sequence counts of
the whole step), so the sum of the dp ranks' gradients is the one-process
gradient of the same global batch; the ranks of an SP group compute the same
loss on gathered tensors, so their gradients are averaged.
:meth:`ParallelDims.reduce_gradients` does both (replicated parameters); FSDP2
is set to sum (not average) over dp for the same result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence, TypeVar

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reelrl.dist import env

T = TypeVar("T")


class ParallelConfig(BaseModel):
    """The ``parallel:`` section of a recipe. Defaults: one process behaves exactly as without it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dp: int | None = Field(
        None, ge=1, description="Data-parallel degree; null = world size / sp. dp * sp must equal the world size."
    )
    sp: int = Field(
        1, ge=1, description="Sequence-parallel degree (MR-SP) for long videos: ranks that share one prompt."
    )
    sp_threshold: int = Field(
        16384, ge=1, description="Prompt tokens above which a prompt's forward passes run sequence-parallel (sp > 1)."
    )
    fsdp: bool = Field(
        False,
        description="Shard the policy (and a frozen reference copy) with FSDP2 fully_shard per decoder layer and "
        "per vision block; false keeps a full replica per rank and all-reduces gradients.",
    )
    mixed_precision: bool = Field(
        True,
        description="Under FSDP2 on GPU: bf16 compute with fp32 parameters, gradients reduced in fp32 "
        "(MixedPrecisionPolicy). Ignored on CPU.",
    )
    cpu_offload: bool = Field(False, description="Under FSDP2: keep sharded parameters and optimizer state in CPU memory.")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="Process-group backend; auto = nccl with CUDA, gloo otherwise."
    )

    @model_validator(mode="after")
    def _supported(self) -> "ParallelConfig":
        if self.fsdp and self.sp > 1:
            raise ValueError(
                "parallel.fsdp with parallel.sp > 1 is not supported: MR-SP runs the language model's pieces "
                "outside the policy's forward, which FSDP2 would not gather; use fsdp with sp=1, or sp without fsdp"
            )
        return self


@dataclass
class ParallelDims:
    """The process layout of a run and its collectives (module docstring). Identity collectives when world == 1."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    dp: int = 1
    sp: int = 1
    fsdp: bool = False
    mixed_precision: bool = True
    cpu_offload: bool = False
    sp_threshold: int = 16384
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dp_group: Any = None
    sp_group: Any = None

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, progress, metrics, summaries and the final model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    # ------------------------------------------------------------------ work split
    def share(self, items: Sequence[T]) -> list[T]:
        """This dp rank's share of ``items``: every ``dp``-th item from position ``dp_rank`` (strided, so shares
        differ in size by at most one and stay in global order)."""
        return list(items[self.dp_rank :: self.dp])

    # ------------------------------------------------------------------ collectives over the dp group
    def gather(self, obj: T) -> list[T]:
        """Every dp rank's ``obj`` (picklable), in dp-rank order; ``[obj]`` on one process."""
        if self.dp == 1:
            return [obj]
        out: list[Any] = [None] * self.dp
        dist.all_gather_object(out, obj, group=self.dp_group)
        return out

    def sum(self, value: float) -> float:
        """``value`` summed over the dp ranks (float64 on the wire)."""
        if self.dp == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, group=self.dp_group)
        return float(t.item())

    def max(self, value: float) -> float:
        """``value``'s maximum over the dp ranks."""
        if self.dp == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.dp_group)
        return float(t.item())

    def sum_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Per-rank partial sums added up over the dp ranks (one collective, whatever keys each rank has)."""
        if self.dp == 1:
            return metrics
        out: dict[str, float] = {}
        for m in self.gather(metrics):
            for k, v in m.items():
                out[k] = out.get(k, 0.0) + float(v)
        return dict(sorted(out.items()))

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Per-rank metrics averaged over the dp ranks (keys present on any rank; NaN-free ranks only)."""
        if self.dp == 1:
            return metrics
        every = self.gather(metrics)
        keys = sorted({k for m in every for k in m})
        out = {}
        for k in keys:
            vals = [float(m[k]) for m in every if k in m and m[k] == m[k]]
            out[k] = sum(vals) / len(vals) if vals else float("nan")
        return out

    def reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum gradients over dp, average over sp, for replicated parameters (FSDP-managed ones reduce themselves).

        Parameters without a gradient on this rank take part with zeros, so
        every rank runs the same collectives.
        """
        if self.world == 1 or self.fsdp:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = torch.cat([g.reshape(-1).float() for g in grads])  # [n_params]
        dist.all_reduce(flat)  # every rank: sum over dp and sp
        if self.sp > 1:
            flat /= self.sp
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def vlm(self, model: torch.nn.Module) -> Any:
        """The model as the trainers see it: a plain ``VLM``, or with ``sp > 1`` one whose prompts longer than
        ``sp_threshold`` tokens run sequence-parallel over this rank's SP group (MR-SP)."""
        if self.sp == 1:
            from reelrl.models.vlm import VLM

            return VLM(model)
        from reelrl.dist.sp_model import SequenceParallelVLM

        return SequenceParallelVLM(model, self.sp_group, self.sp_threshold)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def init_parallel(cfg: ParallelConfig, device: str = "auto") -> ParallelDims:
    """The :class:`ParallelDims` of this process, joining the torchrun process group when ``WORLD_SIZE > 1``.

    ``device`` is the recipe's ``device`` field: ``auto`` picks ``cuda:LOCAL_RANK`` when CUDA is available.
    Raises ValueError when ``dp * sp`` does not match the world size.
    """
    backend = None if cfg.backend == "auto" else cfg.backend
    env.init_distributed(backend)
    world, rank = env.world_size(), env.rank()
    sp = cfg.sp
    dp = cfg.dp if cfg.dp is not None else world // sp
    if dp * sp != world:
        raise ValueError(f"parallel: dp ({dp}) x sp ({sp}) must equal the number of processes ({world})")
    if device == "auto":
        dev = env.device_for_rank()
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None and world > 1:
            dev = torch.device("cuda", env.local_rank())
    dims = ParallelDims(world=world, rank=rank, local_rank=env.local_rank(), dp=dp, sp=sp,
                        fsdp=cfg.fsdp and world > 1, mixed_precision=cfg.mixed_precision,
                        cpu_offload=cfg.cpu_offload, sp_threshold=cfg.sp_threshold, device=dev)
    if world > 1:
        for d in range(dp):  # every rank creates every group, in the same order
            group = dist.new_group(list(range(d * sp, (d + 1) * sp)))
            if d == dims.dp_rank:
                dims.sp_group = group
        for s in range(sp):
            group = dist.new_group(list(range(s, world, sp)))
            if s == dims.sp_rank:
                dims.dp_group = group
    return dims


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ
