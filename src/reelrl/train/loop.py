"""The one stage loop of every training stage (SFT, RL, DPO): steps, checkpoints, resume, stop-after, progress, metrics.

A trainer subclasses :class:`StageTrainer` and keeps only what differs:
``train_step`` (one optimizer step's work, returning its metrics), the number
of steps, the object whose state is the data position, and a status line.
:func:`fit` runs it:

1. with ``resume``, restore the newest intact checkpoint of the stage
   (weights, optimizer, scheduler, data position, RNG states; a damaged newer
   one is set aside with a warning naming the file); without it, refuse a
   stage directory that already holds checkpoints;
2. step until ``total_steps`` (or ``stop_after`` more steps), logging every
   step's metrics (with its peak memory, ``logging.memory``) and saving a checkpoint every ``checkpoint.every`` steps;
3. stopped early: save a checkpoint (the run stays resumable) and return
   None; finished: save the final model (Auto-class loadable) and return the
   stage result. The prompt encoder's prefetch thread is stopped either way.

Every step runs under the model's autocast (fp32 master weights of a
half-precision model, :mod:`reelrl.models.precision`); the final model is
saved in that half dtype.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import torch

from reelrl.config import CheckpointConfig, OptimConfig, RecipeConfig
from reelrl.data.prompts import PromptEncoder
from reelrl.dist.fsdp import full_weights
from reelrl.dist.parallel import ParallelDims
from reelrl.models.vlm import VLM
from reelrl.monitor.memory import StepMemory
from reelrl.monitor.metrics import MetricsLogger, Timer
from reelrl.monitor.progress import progress_bar
from reelrl.rollout.engine import RolloutEngine, build_engine
from reelrl.train.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    newest_intact,
    save_checkpoint,
    save_final_model,
)
from reelrl.train.optim import all_finite, clip_and_norm, make_optimizer, make_scheduler, nonfinite_parameters


class DataPosition(Protocol):
    """Whatever a trainer reads its data with; its state goes into every checkpoint."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StageTrainer:
    """Base of the SFT, RL and DPO trainers: the model, its optimizer and the step counter.

    Stages that generate use ``self.engine`` (the recipe's ``rollout.engine``,
    :mod:`reelrl.rollout.engine`). Subclasses set ``title``, call :meth:`setup_optimizer`, set ``total_steps``
    and ``data`` (a :class:`DataPosition`), and implement :meth:`train_step`.
    """

    title = "train"

    @staticmethod
    def needs_reference(cfg: RecipeConfig) -> bool:
        """Whether the stage needs the frozen reference policy (built by the pipeline and passed in)."""
        return False

    def __init__(
        self, cfg: RecipeConfig, vlm: VLM, encoder: PromptEncoder, stage_dir: Path, dims: ParallelDims | None = None
    ) -> None:
        self.cfg, self.vlm, self.encoder = cfg, vlm, encoder
        self.dims = dims if dims is not None else ParallelDims()
        self.stage_dir = Path(stage_dir)
        self.params = [p for p in vlm.wrapped.parameters() if p.requires_grad]
        self.engine: RolloutEngine = build_engine(cfg.rollout.engine, vlm, cfg.rl.share_prefix,
                                                  **cfg.rollout.engine_kwargs)
        self.timer = Timer()
        self.step_idx = 0
        self.total_steps = 0
        self.data: DataPosition

    def setup_optimizer(self, optim: OptimConfig, total_updates: int) -> None:
        """AdamW over the trainable parameters and its lr schedule over ``total_updates`` optimizer steps."""
        self.grad_clip = optim.grad_clip
        self.opt = make_optimizer(self.params, optim)
        self.sched = make_scheduler(self.opt, max(1, total_updates), optim)

    def optimizer_step(self) -> float:
        """Reduce the gradient over the ranks, clip it, step the optimizer and the schedule, clear the gradient,
        and let the rollout engine pick up the new weights.

        Returns the global gradient norm before clipping (the same on every rank).
        Raises :class:`FloatingPointError` on a non-finite gradient norm (before
        the update) or on weights the update made non-finite (checked after
        it, on every rank), so that nothing non-finite is ever saved.
        """
        self.dims.reduce_gradients(self.params)
        norm = clip_and_norm(self.params, self.grad_clip)
        lr = self.opt.param_groups[0]["lr"]
        if not math.isfinite(norm):
            raise FloatingPointError(
                f"{self.title} step {self.step_idx + 1}: non-finite gradient norm {norm} at lr {lr:g}: the loss "
                "overflowed in backward (a too-high learning rate, fp16 without loss scaling, extreme input "
                "values); the weights were not updated and nothing was saved")
        self.opt.step()
        if self.dims.max(float(not all_finite(self.params))):
            raise FloatingPointError(
                f"{self.title} step {self.step_idx + 1}: the optimizer step made weights non-finite (lr {lr:g}, "
                f"gradient norm {norm:.4g}): the learning rate or the optimizer settings are too extreme; nothing "
                "was saved from this step, the last checkpoint is intact")
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.engine.sync_weights()
        return norm

    def frozen_models(self) -> list[torch.nn.Module]:
        """Other models the stage runs forward passes of (the frozen reference copy, if any)."""
        return []

    def full_weights(self):
        """Context in which FSDP-sharded models hold full weights (rollouts, no-grad passes); a no-op otherwise."""
        return full_weights(self.vlm.wrapped, *self.frozen_models())

    def check_finite(self, loss: torch.Tensor, where: str) -> None:
        """Stop the run on a non-finite loss, naming the step and ``where`` it arose."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.title} step {self.step_idx}: non-finite loss {float(loss.detach())} {where}")

    def train_step(self) -> dict[str, float]:
        """One optimizer step's work; returns its metrics."""
        raise NotImplementedError

    def status(self, metrics: dict[str, float]) -> str:
        """The progress bar's status text after a step."""
        return ""

    def result(self) -> dict[str, Any]:
        """What the stage adds to its ``done.json`` besides the step count and last metrics."""
        return {}

    def skipped_videos(self) -> int:
        """Rows whose video could not be read, over every rank."""
        return int(self.dims.sum(len(self.encoder.skipped)))


def fit(
    trainer: StageTrainer,
    processor: Any,
    logger: MetricsLogger,
    checkpoint: CheckpointConfig,
    *,
    progress: bool = True,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Run ``trainer`` to its last step (module docstring); None when ``stop_after`` stopped it first.

    Every rank runs it; only rank 0 shows progress (``logger`` is a disabled
    one on the other ranks), and checkpoints are written by all ranks together.
    """
    stage_dir, model, dims = trainer.stage_dir, trainer.vlm.wrapped, trainer.dims
    if list_checkpoints(stage_dir) and not resume:
        raise FileExistsError(f"{stage_dir} holds checkpoints of an earlier run; pass --resume or change output_dir")
    if resume and (ckpt := newest_intact(stage_dir, dims)) is not None:
        trainer.step_idx = load_checkpoint(ckpt, model, trainer.opt, trainer.sched, trainer.data, dims)["step"]

    def save() -> None:
        save_checkpoint(stage_dir, trainer.step_idx, model, trainer.opt, trainer.sched, trainer.data, checkpoint.keep,
                        dims, checkpoint.checksums)

    last: dict[str, float] = {}
    try:
        with progress_bar(trainer.title, trainer.total_steps, progress and dims.is_main, start=trainer.step_idx) as bar:
            while trainer.step_idx < trainer.total_steps and (stop_after is None or stop_after > 0):
                with StepMemory(trainer.cfg.logging.memory, dims.device) as mem, trainer.vlm.autocast():
                    last = trainer.train_step()
                last.update({k: dims.max(v) for k, v in mem.metrics().items()})
                trainer.step_idx += 1
                logger.log(trainer.step_idx, last)
                bar.advance(trainer.status(last))
                if checkpoint.every and trainer.step_idx % checkpoint.every == 0:
                    save()
                if stop_after is not None:
                    stop_after -= 1
    finally:
        logger.close()
        trainer.encoder.close()
    if trainer.step_idx < trainer.total_steps:
        save()
        return None
    bad = nonfinite_parameters(model)
    if dims.max(float(len(bad))):
        names = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "") if bad else "on another rank"
        raise FloatingPointError(f"{trainer.title}: the final weights are not finite ({names}); "
                                 "the final model was not saved")
    save_final_model(model, processor, stage_dir / "model", dims, dtype=trainer.vlm.compute_dtype)
    return {"steps": trainer.step_idx, "last": last, "skipped_videos": trainer.skipped_videos(), **trainer.result()}
