"""Resumable checkpoints (torch.distributed.checkpoint): trainable weights, optimizer, scheduler, RNG, data position.

Layout of ``<stage_dir>/checkpoint-<step>/``:

- ``state/``: the trainable parameters and the optimizer state, written with
  ``torch.distributed.checkpoint`` (DCP) from
  ``get_state_dict(model, optimizer)``: keyed by parameter name, whatever the
  sharding (replicated or FSDP2), so a checkpoint written by N processes
  loads in M (a resume at another world size);
- ``trainer_state.pt`` (rank 0): step, scheduler, data position, world size;
- ``rng-<rank>.pt``: each rank's global RNG states (a resume at another world
  size takes rank 0's when its own is missing).

A checkpoint is written into ``checkpoint-<step>.tmp/`` and renamed by rank 0
only after every rank finished writing, so a crash mid-write leaves the
previous checkpoint complete and usable. The final model of a stage is written
with ``save_pretrained`` (LoRA merged) plus the processor by rank 0, from the
full (unsharded) weights, so transformers' Auto classes load it like any
checkpoint.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from reelrl.dist.parallel import ParallelDims

_OPTIONS = StateDictOptions(ignore_frozen_params=True)
_ONE = ParallelDims()


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    stage_dir: Path, step: int, model, optimizer, scheduler, data, keep: int = 2, dims: ParallelDims = _ONE
) -> Path:
    """Write ``checkpoint-<step>`` atomically (module docstring); every rank calls it. Keeps the newest ``keep``."""
    ckpt = Path(stage_dir) / f"checkpoint-{step}"
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if dims.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    dims.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp / "state")
    torch.save(rng_state(), tmp / f"rng-{dims.rank}.pt")
    if dims.is_main:
        trainer_state = {"step": step, "scheduler": scheduler.state_dict(), "data": data.state_dict(),
                         "world": dims.world}
        torch.save(trainer_state, tmp / "trainer_state.pt")
    dims.barrier()
    if dims.is_main:
        if ckpt.exists():
            shutil.rmtree(ckpt)
        tmp.rename(ckpt)  # atomic: a checkpoint directory is always complete
        for old in list_checkpoints(stage_dir)[:-keep]:
            shutil.rmtree(old)
    dims.barrier()
    return ckpt


def list_checkpoints(stage_dir: Path) -> list[Path]:
    found = [p for p in Path(stage_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def load_checkpoint(ckpt: Path, model, optimizer, scheduler, data, dims: ParallelDims = _ONE) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote, at this run's world size; returns the trainer state."""
    ckpt = Path(ckpt)
    if not (ckpt / "state").is_dir() or not (ckpt / "trainer_state.pt").is_file():
        raise ValueError(f"{ckpt}: not a checkpoint of this reelrl version (no state/ or trainer_state.pt)")
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=ckpt / "state")
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=_OPTIONS)
    trainer_state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=False)
    scheduler.load_state_dict(trainer_state["scheduler"])
    data.load_state_dict(trainer_state["data"])
    rng = ckpt / f"rng-{dims.rank}.pt"
    set_rng_state(torch.load(rng if rng.is_file() else ckpt / "rng-0.pt", map_location="cpu", weights_only=False))
    return trainer_state


def _ties_embeddings(model) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "tie_word_embeddings", False)
                or getattr(getattr(config, "text_config", None), "tie_word_embeddings", False))


def save_final_model(model, processor, out_dir: Path, dims: ParallelDims = _ONE,
                     dtype: torch.dtype | None = None) -> Path:
    """save_pretrained of the (LoRA-merged) full model and the processor, by rank 0: loadable with Auto classes.

    ``dtype``: the floating-point weights are written in it (fp32 master weights of a model loaded in half
    precision are saved in that precision, as the checkpoint it started from); None writes them as they are.
    """
    out_dir = Path(out_dir)
    full = None
    if dims.fsdp and dims.world > 1:  # every rank takes part in gathering the shards
        full, _ = get_state_dict(model, [], options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dims.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        to_save = model
        if hasattr(model, "merge_and_unload"):
            import copy

            to_save = copy.deepcopy(model).merge_and_unload()
        if dtype is not None:
            full = full if full is not None else to_save.state_dict()
            full = {k: v.to(dtype) if v.is_floating_point() else v for k, v in full.items()}
        if full is not None and _ties_embeddings(to_save):
            full.pop("lm_head.weight", None)  # tied to the input embeddings, as save_pretrained writes it
        to_save.save_pretrained(out_dir, state_dict=full) if full is not None else to_save.save_pretrained(out_dir)
        if dtype is not None:  # save_pretrained records its first parameter's dtype (an fp32 master)
            to_save.config.dtype = str(dtype).removeprefix("torch.")
            to_save.config.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    dims.barrier()
    return out_dir
