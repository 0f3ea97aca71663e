"""Process-group plumbing and the few collectives reelrl's scale-out code uses.

This is the only reelrl module that talks to ``torch.distributed`` or picks a
CUDA device, so everything else runs unchanged on a laptop (world size 1,
no process group) and under ``torchrun`` (gloo on CPU, NCCL on GPUs).

Gradient convention of :func:`all_gather_autograd` (used by MR-SP's sharded
vision encoding and by the sequence-parallel log-probs): the backward
all-reduces (sums) the gradient of the gathered tensor over the group and
returns the rank's own slice. That is the exact gradient of ``sum_r L_r``
(every rank's loss, whether the ranks compute the same loss on the gathered
tensor or different losses) with respect to the local piece. Parameters that
are replicated over the group must then have their gradients *averaged* over
the group (the DDP / FSDP default), which turns ``d(sum_r L_r)`` into
``d(mean_r L_r)`` -- the gradient of the loss when every rank computes the
same loss.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

Group = dist.ProcessGroup | None


# --------------------------------------------------------------------------- process group
def is_initialized() -> bool:
    """Whether a default process group exists (False on a single process without torchrun)."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(backend: str | None = None) -> bool:
    """Initialise the default process group from the torchrun environment variables.

    Reads ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
    A no-op (returns False) when ``WORLD_SIZE`` is unset or 1; also a no-op (returns
    True) when a group already exists. ``backend`` defaults to ``nccl`` when CUDA is
    available and ``gloo`` otherwise; with NCCL the current CUDA device is set to
    ``LOCAL_RANK`` first.
    """
    if is_initialized():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"reelrl.dist.env.init_distributed: WORLD_SIZE={world} but ${var} is not set")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://")
    return True


def destroy() -> None:
    """Tear down the default process group if one exists."""
    if is_initialized():
        dist.destroy_process_group()


def rank(group: Group = None) -> int:
    """Rank of this process in ``group`` (0 without a process group)."""
    return dist.get_rank(group) if is_initialized() else 0


def world_size(group: Group = None) -> int:
    """Number of processes in ``group`` (1 without a process group)."""
    return dist.get_world_size(group) if is_initialized() else 1


def local_rank() -> int:
    """Index of this process on its node (``LOCAL_RANK``, 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on global rank 0 (and on a single process)."""
    return rank() == 0


def barrier(group: Group = None) -> None:
    """Wait for every process of ``group``; a no-op without a process group."""
    if is_initialized():
        dist.barrier(group=group)


def device_for_rank() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for local multi-process runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_entry(
    local: int, fn: Callable[..., Any], world: int, port: int, backend: str, threads: int, args: tuple
) -> None:
    """Child-process body of :func:`spawn_local`: set the env, join the group, run ``fn``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local),
        LOCAL_RANK=str(local),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(threads)
    init_distributed(backend)
    try:
        fn(local, world, *args)
    finally:
        destroy()


def spawn_local(
    fn: Callable[..., Any], nprocs: int, args: tuple = (), backend: str = "gloo", threads: int = 1
) -> None:
    """Run ``fn(rank, world, *args)`` in ``nprocs`` fresh processes joined by one process group.

    For tests and benchmarks on one machine: picks a free port, uses the ``spawn``
    start method (``fn`` must be importable at module level) and ``threads`` torch
    threads per process. Raises if any child fails.
    """
    port = find_free_port()
    torch.multiprocessing.start_processes(
        _spawn_entry,
        args=(fn, nprocs, port, backend, threads, args),
        nprocs=nprocs,
        join=True,
        start_method="spawn",
    )


# --------------------------------------------------------------------------- collectives
def _offsets(sizes: Sequence[int]) -> list[int]:
    """Exclusive prefix sums: where each rank's piece starts in the gathered tensor."""
    out, acc = [], 0
    for n in sizes:
        out.append(acc)
        acc += n
    return out


class _AllGatherVariable(torch.autograd.Function):
    """All-gather pieces of different lengths along ``dim``; backward = all-reduce(sum) then slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: tuple[int, ...], dim: int, group: Group) -> Tensor:
        me = dist.get_rank(group)
        if x.shape[dim] != sizes[me]:
            raise ValueError(
                f"reelrl.dist.env.all_gather_autograd: rank {me} holds {x.shape[dim]} rows along dim {dim}, "
                f"but sizes says {sizes[me]}"
            )
        ctx.sizes, ctx.dim, ctx.group, ctx.me = sizes, dim, group, me
        longest = max(sizes)
        pad_shape = list(x.shape)
        pad_shape[dim] = longest - x.shape[dim]
        padded = torch.cat([x, x.new_zeros(pad_shape)], dim=dim).contiguous()  # [.., longest, ..]
        pieces = [torch.empty_like(padded) for _ in sizes]  # P x [.., longest, ..]
        dist.all_gather(pieces, padded, group=group)
        return torch.cat([p.narrow(dim, 0, n) for p, n in zip(pieces, sizes)], dim=dim)  # [.., sum(sizes), ..]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        total = grad.contiguous().clone()  # [.., sum(sizes), ..]
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        start = _offsets(ctx.sizes)[ctx.me]
        return total.narrow(ctx.dim, start, ctx.sizes[ctx.me]), None, None, None  # [.., sizes[me], ..]


def all_gather_autograd(x: Tensor, sizes: Sequence[int] | None = None, dim: int = 0, group: Group = None) -> Tensor:
    """Concatenate every rank's ``x`` along ``dim`` in rank order, differentiably.

    ``sizes[r]`` is rank r's length along ``dim``; when None all ranks must hold the
    same length. Ranks may hold zero rows (they still take part). Identity without a
    process group. Backward: see the module docstring (sum over ranks, then slice).
    """
    world = world_size(group)
    if world == 1:
        return x
    if sizes is None:
        sizes = [int(x.shape[dim])] * world
    if len(sizes) != world:
        raise ValueError(f"reelrl.dist.env.all_gather_autograd: {len(sizes)} sizes for a group of {world} ranks")
    return _AllGatherVariable.apply(x, tuple(int(n) for n in sizes), dim, group)


def _all_to_all(x: Tensor, scatter_dim: int, gather_dim: int, group: Group) -> Tensor:
    """Split ``x`` into P chunks along ``scatter_dim``, send chunk j to rank j, concat received along ``gather_dim``."""
    world = dist.get_world_size(group)
    if x.shape[scatter_dim] % world:
        raise ValueError(
            f"reelrl.dist.env.all_to_all: dim {scatter_dim} has size {x.shape[scatter_dim]}, "
            f"not divisible by the world size {world}"
        )
    send = torch.stack(x.chunk(world, dim=scatter_dim), dim=0).contiguous()  # [P, *chunk]
    recv = torch.empty_like(send)  # [P, *chunk]; recv[j] comes from rank j
    dist.all_to_all_single(recv, send, group=group)
    return torch.cat(recv.unbind(0), dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    """Autograd all-to-all; its backward is the all-to-all with the two dims swapped."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scatter_dim: int, gather_dim: int, group: Group) -> Tensor:
        ctx.scatter_dim, ctx.gather_dim, ctx.group = scatter_dim, gather_dim, group
        return _all_to_all(x, scatter_dim, gather_dim, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        return _all_to_all(grad, ctx.gather_dim, ctx.scatter_dim, ctx.group), None, None, None


def all_to_all_autograd(x: Tensor, scatter_dim: int, gather_dim: int, group: Group = None) -> Tensor:
    """Differentiable all-to-all: scatter ``x`` over ranks along ``scatter_dim``, gather along ``gather_dim``.

    The output's ``scatter_dim`` shrinks P-fold and its ``gather_dim`` grows P-fold.
    Identity without a process group. The backward is exact (no gradient convention needed).
    """
    if world_size(group) == 1:
        return x
    return _AllToAll.apply(x, scatter_dim, gather_dim, group)
