"""Resumable checkpoints: trainable weights, optimizer, scheduler, RNG states, data position.

Layout of ``<stage_dir>/checkpoint-<step>/``: ``trainable.pt`` (the parameters
that train, by name), ``trainer_state.pt`` (optimizer, scheduler, sampler,
RNG states, step). The final model of a stage is written with
``save_pretrained`` (LoRA merged) plus the processor, so transformers' Auto
classes load it like any checkpoint.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch


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


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(stage_dir: Path, step: int, model, optimizer, scheduler, sampler, keep: int = 2, extra=None) -> Path:
    ckpt = Path(stage_dir) / f"checkpoint-{step}"
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save(trainable_state(model), tmp / "trainable.pt")
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "sampler": sampler.state_dict(),
            "rng": rng_state(),
            "extra": extra or {},
        },
        tmp / "trainer_state.pt",
    )
    if ckpt.exists():
        shutil.rmtree(ckpt)
    tmp.rename(ckpt)  # atomic: a checkpoint directory is always complete
    for old in list_checkpoints(stage_dir)[:-keep]:
        shutil.rmtree(old)
    return ckpt


def list_checkpoints(stage_dir: Path) -> list[Path]:
    found = [p for p in Path(stage_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def load_checkpoint(ckpt: Path, model, optimizer, scheduler, sampler) -> dict:
    """Restore everything saved by :func:`save_checkpoint`; returns the trainer state."""
    weights = torch.load(Path(ckpt) / "trainable.pt", map_location="cpu")
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise ValueError(f"{ckpt}: checkpoint has parameters the model lacks, e.g. {missing[:3]}")
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].device, params[n].dtype))
    state = torch.load(Path(ckpt) / "trainer_state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    return state


def save_final_model(model, processor, out_dir: Path) -> Path:
    """save_pretrained of the (LoRA-merged) model and the processor: loadable with Auto classes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    to_save = model
    if hasattr(model, "merge_and_unload"):
        import copy

        to_save = copy.deepcopy(model).merge_and_unload()
    to_save.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
