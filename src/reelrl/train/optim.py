"""AdamW with linear warmup and cosine / linear / constant decay."""

from __future__ import annotations

import math

import torch

from reelrl.config import OptimConfig


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (check model.freeze_vision / model.lora)")
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based) of ``total``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def make_scheduler(opt: torch.optim.Optimizer, total_steps: int, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, cfg))


def clip_and_norm(params, max_norm: float | None) -> float:
    """Clip the global grad norm (if ``max_norm``) and return the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor holding the global norm
        norm = norm.full_tensor()
    return float(norm)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t  # FSDP2 DTensor: this rank's shard


def all_finite(params) -> bool:
    """Whether every element of ``params`` (this rank's shards) is finite: one fused norm per tensor, one sync."""
    local = [_local(p.detach()) for p in params]
    local = [t for t in local if t.numel()]
    if not local:
        return True
    norms = torch._foreach_norm(local)  # [n] per-tensor 2-norms: inf/nan iff a non-finite element (or overflow)
    return bool(torch.isfinite(torch.stack([n.float() for n in norms]).sum()))


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of ``model``'s parameters and buffers holding a NaN or an infinity (this rank's shards)."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return [n for n, t in named if t.is_floating_point() and not bool(torch.isfinite(_local(t.detach())).all())]
