"""CoT supervised fine-tuning: next-token loss on the assistant tokens of reasoning traces.

The loss of an optimizer step is the mean over every labelled token of its
whole batch (micro-batches are normalised by the global token count, so
gradient accumulation does not change the result). Under data parallelism each
rank takes every dp-th row of the step's batch and the token count is summed
over the ranks, so the summed gradients equal the one-process gradient.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from reelrl.config import RecipeConfig
from reelrl.data.curriculum import UniformSource
from reelrl.data.prompts import PromptEncoder, target_text
from reelrl.data.schema import VideoRow
from reelrl.dist.parallel import ParallelDims
from reelrl.models.vlm import VLM
from reelrl.train.loop import StageTrainer

PAD_KEYS = {"input_ids": 0, "attention_mask": 0, "labels": -100, "mm_token_type_ids": 0}
CAT_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def collate(examples: list[dict[str, Tensor]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad token tensors ``[1, L_i] -> [B, L]`` and concatenate the video tensors."""
    width = max(int(e["input_ids"].shape[1]) for e in examples)
    out: dict[str, Tensor] = {}
    for key, fill in PAD_KEYS.items():
        if key not in examples[0]:
            continue
        fill = pad_id if key == "input_ids" else fill
        rows = []
        for e in examples:
            t = e[key]  # [1, L_i]
            pad = torch.full((1, width - t.shape[1]), fill, dtype=t.dtype)  # [1, L - L_i]
            rows.append(torch.cat([t, pad], dim=1))
        out[key] = torch.cat(rows, dim=0)  # [B, L]
    for key in CAT_KEYS:
        if key in examples[0]:
            out[key] = torch.cat([e[key] for e in examples], dim=0)
    return out


def sft_loss(logits: Tensor, labels: Tensor, num_tokens: float) -> Tensor:
    """Summed next-token NLL over labelled positions divided by ``num_tokens``."""
    shift_logits = logits[:, :-1, :].float()  # [B, L-1, V]
    shift_labels = labels[:, 1:]  # [B, L-1]
    nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100, reduction="sum")
    return nll / num_tokens


class SFTTrainer(StageTrainer):
    """Trains on ``<think>reasoning</think><answer>answer</answer>`` targets of the rows."""

    title = "SFT"

    def __init__(self, cfg: RecipeConfig, vlm: VLM, tokenizer, encoder: PromptEncoder, rows: list[VideoRow],
                 stage_dir: Path, reference: None = None, dims: ParallelDims | None = None) -> None:
        super().__init__(cfg, vlm, encoder, stage_dir, dims)
        self.sft = cfg.sft
        rows = rows[: self.sft.max_rows] if self.sft.max_rows else rows
        pairs = [(r, target_text(r, self.sft.rows_without_reasoning)) for r in rows]
        self.rows = [(r, t) for r, t in pairs if t is not None]
        if not self.rows:
            raise ValueError("no SFT rows with reasoning traces")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.total_steps = max(1, math.ceil(self.sft.epochs * len(self.rows) / self.sft.batch_size))
        self.data = UniformSource(self.rows, self.sft.batch_size, cfg.seed, cfg.data.shuffle)
        self.setup_optimizer(self.sft.optim, self.total_steps)
        self._cache: dict[str, dict] = {}

    def _example(self, i: int) -> dict[str, Tensor] | None:
        row, target = self.rows[i]
        if row.id not in self._cache:
            try:
                self._cache[row.id] = self.encoder.encode_sft(row, target)
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
        dev = self.vlm.device
        with self.timer("update"):
            for k, part in enumerate(passes):
                batch_t = collate(part or passes[0], self.pad_id)
                labels = batch_t.pop("labels").to(dev)  # [b, L]
                out = self.vlm.model(**{key: v.to(dev) for key, v in batch_t.items()}, use_cache=False)
                loss = sft_loss(out.logits, labels, num_tokens) * (1.0 if part else 0.0)
                self.check_finite(loss, f"in micro-batch {k}")
                loss.backward()
                total += float(loss.detach())
            norm = self.optimizer_step()
        return {"sft/loss": self.dims.sum(total), "sft/tokens": num_tokens, "grad_norm": norm,
                "lr": self.sched.get_last_lr()[0], **self.timer.pop()}

    def status(self, metrics: dict[str, float]) -> str:
        return f"loss {metrics['sft/loss']:.3f}"
