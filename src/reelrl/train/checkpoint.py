"""Resumable checkpoints (torch.distributed.checkpoint): trainable weights, optimizer, scheduler, RNG, data position.

Layout of ``<stage_dir>/checkpoint-<step>/``:

- ``state/``: the trainable parameters and the optimizer state, written with
  ``torch.distributed.checkpoint`` (DCP) from
  ``get_state_dict(model, optimizer)``: keyed by parameter name, whatever the
  sharding (replicated or FSDP2), so a checkpoint written by N processes
  loads in M (a resume at another world size);
- ``trainer_state.pt`` (rank 0): step, scheduler, data position, world size;
- ``rng-<rank>.pt``: each rank's global RNG states (a resume at another world
  size takes rank 0's when its own is missing);
- ``manifest.json``: every file's size and SHA-256 (:mod:`reelrl.train.durable`),
  written last.

A checkpoint is written into ``checkpoint-<step>.tmp/``; after every rank
finished writing, rank 0 fsyncs the files, writes the manifest, fsyncs it and
the directories, and renames the directory into place (then fsyncs the stage
directory). A crash or power loss mid-write leaves the previous checkpoint
complete and usable; a full disk or a permission error raises a
:class:`~reelrl.train.durable.CheckpointError` naming the path and the
cause, and removes the partial directory. At resume :func:`newest_intact`
verifies the manifest of the newest checkpoint and falls back to the newest
intact one, saying which file is damaged and why. The final model of a stage is written
with ``save_pretrained`` (LoRA merged) plus the processor by rank 0, from the
full (unsharded) weights, so transformers' Auto classes load it like any
checkpoint.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from reelrl.dist.parallel import ParallelDims
from reelrl.train.durable import (
    CheckpointError,
    root_cause,
    explain_write_error,
    fsync_path,
    verify_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

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


def _together(dims: ParallelDims, what: str, path: Path, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on this rank; if it failed on any rank, every rank raises (no rank is left in a barrier)."""
    err: BaseException | None = None
    out = None
    try:
        out = fn()
    except (Exception, CheckpointException) as e:  # CheckpointException is a BaseException
        err = e
    if dims.max(float(err is not None)):
        reason = explain_write_error(err, path) if err is not None else "it failed on another rank"
        raise CheckpointError(f"{what} failed: {reason}") from err
    return out


def save_checkpoint(
    stage_dir: Path, step: int, model, optimizer, scheduler, data, keep: int = 2, dims: ParallelDims = _ONE,
    checksums: bool = True,
) -> Path:
    """Write ``checkpoint-<step>`` atomically and durably (module docstring); every rank calls it.

    Keeps the newest ``keep``. A failed write (disk full, permission) raises :class:`CheckpointError` naming the
    path and the cause, after removing the partial ``.tmp`` directory; the checkpoints before it are untouched.
    """
    stage_dir = Path(stage_dir)
    ckpt = stage_dir / f"checkpoint-{step}"
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    earlier = [p for p in list_checkpoints(stage_dir) if p != ckpt]
    what = (f"writing checkpoint {ckpt} (the previous checkpoint, {earlier[-1].name}, is intact)" if earlier
            else f"writing checkpoint {ckpt}")

    def prepare() -> None:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)

    def write() -> None:
        model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp / "state")
        torch.save(rng_state(), tmp / f"rng-{dims.rank}.pt")

    def commit() -> None:
        trainer_state = {"step": step, "scheduler": scheduler.state_dict(), "data": data.state_dict(),
                         "world": dims.world}
        torch.save(trainer_state, tmp / "trainer_state.pt")
        write_manifest(tmp, checksums)  # fsyncs every file, then the manifest, then the directories
        if ckpt.exists():
            shutil.rmtree(ckpt)
        tmp.rename(ckpt)  # atomic: a checkpoint directory is always complete
        fsync_path(stage_dir)
        for old in list_checkpoints(stage_dir)[:-keep]:
            shutil.rmtree(old)

    try:
        _together(dims, what, tmp, prepare if dims.is_main else lambda: None)
        dims.barrier()
        _together(dims, what, tmp, write)
        _together(dims, what, tmp, commit if dims.is_main else lambda: None)
    except CheckpointError:
        if dims.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ckpt


def list_checkpoints(stage_dir: Path) -> list[Path]:
    found = [p for p in Path(stage_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def newest_intact(stage_dir: Path, dims: ParallelDims = _ONE) -> Path | None:
    """The newest checkpoint of ``stage_dir`` whose manifest verifies (rank 0 checks; every rank gets its answer).

    A damaged newer checkpoint is renamed ``checkpoint-<step>.damaged`` (kept for inspection, no longer listed)
    and a warning says which file is damaged and why. None when the stage has no checkpoint; raises
    :class:`CheckpointError` naming every checkpoint and its damage when none is intact.
    """
    found = list_checkpoints(stage_dir)
    if not found:
        return None
    damaged: list[tuple[Path, str]] = []
    chosen: Path | None = None
    if dims.is_main:
        for ckpt in reversed(found):
            reason = verify_manifest(ckpt)
            if reason is None:
                chosen = ckpt
                break
            damaged.append((ckpt, reason))
    chosen, damaged = dims.broadcast((chosen, damaged))
    if chosen is None:
        lines = "\n".join(f"  {c.name}: {why}" for c, why in damaged)
        raise CheckpointError(f"cannot resume {stage_dir}: no intact checkpoint\n{lines}\n"
                              "remove the damaged checkpoints to start the stage again, or use another output_dir")
    for ckpt, why in damaged:
        aside = ckpt.with_name(ckpt.name + ".damaged")
        log.warning("%s is damaged (%s); resuming from %s; the damaged one is kept as %s", ckpt.name, why,
                    chosen.name, aside.name)
        if dims.is_main:
            shutil.rmtree(aside, ignore_errors=True)
            ckpt.rename(aside)
    dims.barrier()
    return chosen


def load_checkpoint(ckpt: Path, model, optimizer, scheduler, data, dims: ParallelDims = _ONE) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote, at this run's world size; returns the trainer state.

    Verify it first (:func:`newest_intact`); a file that still cannot be read raises :class:`CheckpointError`
    naming it.
    """
    ckpt = Path(ckpt)
    if not (ckpt / "state").is_dir() or not (ckpt / "trainer_state.pt").is_file():
        raise CheckpointError(f"{ckpt}: not a checkpoint of this reelrl version (no state/ or trainer_state.pt)")
    current = ckpt / "state"
    try:
        model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=current)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=_OPTIONS)
        current = ckpt / "trainer_state.pt"
        trainer_state = torch.load(current, map_location="cpu", weights_only=False)
        scheduler.load_state_dict(trainer_state["scheduler"])
        data.load_state_dict(trainer_state["data"])
        rng = ckpt / f"rng-{dims.rank}.pt"
        current = rng if rng.is_file() else ckpt / "rng-0.pt"
        set_rng_state(torch.load(current, map_location="cpu", weights_only=False))
    except (Exception, CheckpointException) as e:
        cause = root_cause(e)
        raise CheckpointError(f"{current}: cannot be read ({type(cause).__name__}: {cause})") from e
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

    def write() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        to_save, weights = model, full
        if hasattr(model, "merge_and_unload"):
            import copy

            to_save = copy.deepcopy(model).merge_and_unload()
        if dtype is not None:
            weights = weights if weights is not None else to_save.state_dict()
            weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
        if weights is not None and _ties_embeddings(to_save):
            weights.pop("lm_head.weight", None)  # tied to the input embeddings, as save_pretrained writes it
        to_save.save_pretrained(out_dir, state_dict=weights) if weights is not None else to_save.save_pretrained(out_dir)
        if dtype is not None:  # save_pretrained records its first parameter's dtype (an fp32 master)
            to_save.config.dtype = str(dtype).removeprefix("torch.")
            to_save.config.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)

    earlier = list_checkpoints(out_dir.parent)
    what = f"writing the final model into {out_dir}" + (
        f" (the checkpoint {earlier[-1].name} is intact: free the space and rerun with --resume)" if earlier else "")
    _together(dims, what, out_dir, write if dims.is_main else lambda: None)
    return out_dir
