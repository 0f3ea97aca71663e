"""Peak memory of each training step, per rank (``logging.memory``), and the tensor-storage tracker behind it.

Three modes, reported by the stage loop as metrics of every step (the largest
value over the ranks, the one that must fit a device):

- ``peak`` (default, free): on CUDA ``memory/cuda_peak_gb``, the caching
  allocator's peak during the step (``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``); on every device ``memory/rss_gb``, the process's
  peak resident set so far (``ru_maxrss``: a high-water mark that never falls).
- ``tensors`` (slow: a Python call per op): ``memory/tensors_peak_mb``, the
  peak live bytes of the tensor storages created during the step by
  :class:`TensorMemoryTracker`: activations, temporaries, gradients, KV caches
  and optimizer state created in the step, on any device, CPU included. This
  is what ``benchmarks/scaling.py`` compares across parallel layouts.
- ``off``: nothing.

Why a tracker on CPU: torch has no CPU caching allocator, so ``torch.cpu``
exposes no memory statistics (``torch.cuda.max_memory_allocated`` has no CPU
counterpart); ``tracemalloc`` sees only Python objects, not tensor storages;
and the RSS high-water mark is set by whatever came first (loading the model,
decoding a video) and includes fragmentation. The tracker is a
``TorchDispatchMode``: it records the storage of every tensor an op creates
under it, frees it when the storage is garbage collected, and keeps the peak
of the live bytes. Tensors created before the step (weights, optimizer state
of earlier steps) are not counted; the backward is (the autograd engine keeps
the mode active), work on other threads is not (the prefetch thread's frame
decoding). Exact up to views (counted once per storage) and tensors made
outside dispatch. ``torch.distributed._tools.mem_tracker.MemTracker`` (a
private torch API) implements the same idea with module attribution.
Measured example (tiny Qwen2.5-VL, S = 525 + 256 tokens, G = 4, float32,
forward + backward of :func:`reelrl.dist.sp_model.sp_completion_logprobs`):
35.0 MB on one process (``MemTracker``: 34.6 MB), 18.4 / 21.9 MB per rank with
2 ranks, 9.5 - 12.5 MB with 4; the last rank holds the completion positions
and their vocabulary-size logits.
"""

from __future__ import annotations

import resource
import sys
import weakref
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["MEMORY_MODES", "StepMemory", "TensorMemoryTracker", "peak_rss_bytes"]

MemoryMode = Literal["off", "peak", "tensors"]
MEMORY_MODES = ("off", "peak", "tensors")


class TensorMemoryTracker(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created by ops inside the block (any device, CPU included).

    Usage::

        with TensorMemoryTracker() as mem:
            loss = f(); loss.backward()
        mem.peak  # bytes

    Every op output's untyped storage is counted once (views share it) from its
    creation until it is garbage collected. Tensors created before the block
    (weights, inputs) are not counted; gradients accumulated into ``.grad``
    during the block are. Collective outputs allocated by the caller (e.g.
    ``torch.empty_like``) are counted like any other op output.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: dict[int, int] = {}  # id of a live storage -> its bytes

    def _add(self, t: Tensor) -> None:
        try:
            storage = t.untyped_storage()
        except (NotImplementedError, RuntimeError):
            return
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        key = id(storage)  # storages keep one Python object while alive, so the id is stable
        if key in self._seen:
            return
        self._seen[key] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._seen.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, Tensor):
                self._add(leaf)
        return out


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


class StepMemory:
    """``with StepMemory(mode, device) as mem: step()``; then :meth:`metrics` (this rank's numbers, module docstring)."""

    def __init__(self, mode: MemoryMode, device: torch.device) -> None:
        if mode not in MEMORY_MODES:
            raise ValueError(f"logging.memory: {mode!r} is not one of {MEMORY_MODES}")
        self.mode, self.device = mode, torch.device(device)
        self._tracker: TensorMemoryTracker | None = None
        self._values: dict[str, float] = {}

    def __enter__(self) -> "StepMemory":
        if self.mode == "peak" and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.mode == "tensors":
            self._tracker = TensorMemoryTracker().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._tracker is not None:
            self._tracker.__exit__(*exc)
            self._values = {"memory/tensors_peak_mb": self._tracker.peak / 2**20}
            self._tracker = None
        elif self.mode == "peak":
            self._values = {"memory/rss_gb": peak_rss_bytes() / 2**30}
            if self.device.type == "cuda":
                self._values["memory/cuda_peak_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30

    def metrics(self) -> dict[str, float]:
        """The step's numbers on this rank (empty with mode ``off``)."""
        return dict(self._values)
