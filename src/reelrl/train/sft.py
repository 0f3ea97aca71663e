"""CoT supervised fine-tuning: next-token loss on the assistant tokens of reasoning traces.

The loss of an optimizer step is the mean over every labelled token of its
whole batch: each micro-batch's summed NLL (:meth:`reelrl.models.vlm.VLM.sft_nll`)
is divided by the token count of the whole batch, so gradient accumulation
does not change the result. Under data parallelism each
rank takes every dp-th row of the step's batch and the token count is summed
over the ranks, so the summed gradients equal the one-process gradient.
With ``parallel.sp > 1`` the examples whose prompt exceeds ``parallel.sp_threshold``
tokens run sequence-parallel (MR-SP) like RL's long prompts.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor

from reelrl.config import RecipeConfig
from reelrl.data.curriculum import UniformSource
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow
from reelrl.dist.parallel import ParallelDims
from reelrl.envs import ENVS
from reelrl.gym.clues import TRACES
from reelrl.models.vlm import VLM
from reelrl.train.loop import StageTrainer


class SFTTrainer(StageTrainer):
    """Trains on ``<think>reasoning</think><answer>answer</answer>`` targets of the rows (in the prompt
    template's layout, :meth:`reelrl.data.prompts.PromptEncoder.target`); the reasoning is the row's trace
    in the ``sft.trace`` style (:data:`reelrl.gym.clues.TRACES`)."""

    title = "SFT"

    def __init__(self, cfg: RecipeConfig, vlm: VLM, tokenizer, encoder: PromptEncoder, rows: list[VideoRow],
                 stage_dir: Path, reference: None = None, dims: ParallelDims | None = None) -> None:
        super().__init__(cfg, vlm, encoder, stage_dir, dims)
        self.sft, self.env = cfg.sft, cfg.rl.env
        rows = rows[: self.sft.max_rows] if self.sft.max_rows else rows
        trace = TRACES.get(self.sft.trace)
        rows = [r.model_copy(update={"reasoning": trace(r, encoder.prompt.wrap_think)}) for r in rows]
        pairs = [(r, encoder.target(r, self.sft.rows_without_reasoning)) for r in rows]
        self.rows = [(r, t) for r, t in pairs if t is not None]
        if not self.rows:
            raise ValueError("no SFT rows with reasoning traces")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.total_steps = max(1, math.ceil(self.sft.epochs * len(self.rows) / self.sft.batch_size))
        self.data = UniformSource(self.rows, self.sft.batch_size, cfg.seed, cfg.data.shuffle)
        self.setup_optimizer(self.sft.optim, self.total_steps)
        self._cache: dict[str, dict] = {}

    def _episode(self, row: VideoRow) -> dict[str, Tensor]:
        """The SFT example of ``row``'s gold episode in ``rl.env`` (``sft.demonstrations``)."""
        env = ENVS.resolve(self.env.name)(row, self.encoder.frames(row), **self.env.kwargs)
        if not callable(getattr(env, "demonstration", None)):
            raise ValueError(f"sft.demonstrations: environment {self.env.name!r} has no demonstration()")
        demo = env.demonstration()
        targets = [self.encoder.prompt.target(reasoning, answer) for reasoning, answer in demo.answers]
        return self.encoder.encode_sft_episode(row, targets, demo.observations)

    def _example(self, i: int) -> dict[str, Tensor] | None:
        row, target = self.rows[i]
        if row.id not in self._cache:
            try:
                self._cache[row.id] = (self._episode(row) if self.sft.demonstrations
                                       else self.encoder.encode_sft(row, target))
            except ValueError as e:  # VideoError is a ValueError
                self.encoder.skipped[row.id] = str(e)
                return None
        return self._cache[row.id]

    def train_step(self) -> dict[str, float]:
        self.vlm.model.train()
        batch = self.dims.share(self.data.next_batch(self.step_idx))
        with self.timer("decode"):
            examples = [e for i in batch if (e := self._example(i)) is not None]
        num_tokens = self.dims.sum(sum(int((e["labels"][:, 1:] != -100).sum()) for e in examples))
        if num_tokens == 0:
            raise RuntimeError(f"SFT step {self.step_idx}: no readable video in the batch: {self.encoder.skipped}")
        micro = self.sft.micro_batch_size
        passes = [examples[s : s + micro] for s in range(0, len(examples), micro)]
        if self.dims.fsdp:  # FSDP2 gathers weights in every forward: each rank runs as many passes (extra ones weigh 0)
            if not passes:
                raise RuntimeError(f"SFT step {self.step_idx}: rank {self.dims.rank} read no video of its share")
            passes += [[]] * (int(self.dims.max(len(passes))) - len(passes))
        total = 0.0
        with self.timer("update"):
            for k, part in enumerate(passes):
                loss = self.vlm.sft_nll(part or passes[0], self.pad_id) / num_tokens * (1.0 if part else 0.0)
                self.check_finite(loss, f"in micro-batch {k}")
                loss.backward()
                total += float(loss.detach())
            norm = self.optimizer_step()
        return {"sft/loss": self.dims.sum(total), "sft/tokens": num_tokens, "grad_norm": norm,
                "lr": self.sched.get_last_lr()[0], **self.timer.pop(), **self.vlm.metrics()}

    def status(self, metrics: dict[str, float]) -> str:
        return f"loss {metrics['sft/loss']:.3f}"
