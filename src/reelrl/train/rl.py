"""The GRPO-family trainer: rollouts -> rewards -> advantages -> policy loss -> update.

Methods plug in by name (``rl.advantage``, ``rl.loss``, ``rl.rewards``); the loop
never branches on a method. One step:

1. take B rows, decode their videos and encode the prompts (``decode``);
2. run the vision tower once per prompt (``encode``) and sample G completions
   from one prefill whose KV cache is forked G ways (``rollout``);
3. score completions with the reward registry, turn rewards into advantages;
4. old-policy (when needed) and reference log-probs, reusing the cached video
   embeddings (``logprob``);
5. policy loss per group, summed over groups with global normalisers, one
   optimizer step per mini-batch (``update``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from reelrl.algos import ADVANTAGES, LOSSES, PolicyBatch
from reelrl.config import RecipeConfig
from reelrl.data.schema import VideoRow
from reelrl.models.vlm import VLM, EncodedPrompt, token_entropy, token_logprobs
from reelrl.rewards import RewardSpec, compute_rewards
from reelrl.rollout.hf import Rollout, SamplingParams, generate_group, make_generators
from reelrl.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from reelrl.train.metrics import MetricsLogger, Timer
from reelrl.train.optim import clip_and_norm, make_optimizer, make_scheduler
from reelrl.train.progress import progress_bar
from reelrl.train.prompts import PromptEncoder
from reelrl.train.sampler import RowSampler


@dataclass
class Group:
    """One prompt and its G completions, with everything the update needs."""

    row: VideoRow
    prompt: EncodedPrompt
    vision: dict | None  # cached video embeddings (no grad) or None
    rollout: Rollout
    texts: list[str]
    rewards: Tensor | None = None  # [G]
    advantages: Tensor | None = None  # [G]
    old_logp: Tensor | None = None  # [G, T]
    ref_logp: Tensor | None = None  # [G, T]
    columns: dict[str, Tensor] = field(default_factory=dict)  # per-reward values [G]


class ReferencePolicy:
    """Log-probs of the frozen reference: the base model with LoRA disabled, or a frozen copy."""

    def __init__(self, policy: VLM, copy: VLM | None) -> None:
        self.policy, self.copy = policy, copy

    @torch.no_grad()
    def logprobs(self, g: Group, temperature: float, share_prefix: bool, vision_shared: bool) -> Tensor:
        tokens = g.rollout.tokens  # [G, T]
        if self.copy is not None:
            vision = g.vision if vision_shared else (self.copy.encode_vision(g.prompt) if g.vision is not None else None)
            logits = self.copy.completion_logits(g.prompt, tokens, vision, share_prefix)  # [G, T, V]
        else:
            with self.policy.wrapped.disable_adapter():
                logits = self.policy.completion_logits(g.prompt, tokens, g.vision, share_prefix)  # [G, T, V]
        return token_logprobs(logits, tokens, temperature)  # [G, T]


class RLTrainer:
    """Runs ``cfg.rl.steps`` optimizer steps of the configured method."""

    def __init__(
        self,
        cfg: RecipeConfig,
        vlm: VLM,
        tokenizer,
        encoder: PromptEncoder,
        rows: list[VideoRow],
        stage_dir: Path,
        reference: ReferencePolicy | None = None,
    ) -> None:
        self.cfg, self.rl = cfg, cfg.rl
        self.vlm, self.tok, self.encoder, self.rows = vlm, tokenizer, encoder, rows
        self.stage_dir = Path(stage_dir)
        self.reference = reference
        if self.rl.beta > 0 and reference is None:
            raise ValueError("rl.beta > 0 needs a reference policy")
        self.sampler = RowSampler(len(rows), self.rl.prompts_per_step, cfg.seed, cfg.data.shuffle)
        self.params = [p for p in vlm.wrapped.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.params, self.rl.optim)
        total_updates = self.rl.steps * self.rl.mini_batches * self.rl.ppo_epochs
        self.sched = make_scheduler(self.opt, total_updates, self.rl.optim)
        self.reward_specs = [RewardSpec(r.name, r.weight, r.kwargs) for r in self.rl.rewards]
        self.metric_specs = [RewardSpec("accuracy", 0.0), RewardSpec("format", 0.0)]
        self.sampling = sampling_params(cfg, tokenizer, vlm)
        self.vision_trainable = vlm.vision_trainable()
        self.timer = Timer()
        self.step_idx = 0

    # --------------------------------------------------------------- collect
    def collect(self, rows: list[VideoRow]) -> list[Group]:
        """Decode, encode the video once, roll out G completions per prompt, and score them."""
        groups = []
        self.vlm.model.eval()
        for b, row in enumerate(rows):
            with self.timer("decode"):
                prompt = self.encoder.try_encode(row)
            if prompt is None:
                continue
            with torch.no_grad(), self.timer("encode"):
                vision = self.vlm.encode_vision(prompt) if self.rl.cache_vision else None
            seed = int(np.random.SeedSequence([self.cfg.seed, self.step_idx, b]).generate_state(1)[0])
            gens = make_generators(seed, self.rl.group_size, self.vlm.device)
            with self.timer("rollout"):
                ro = generate_group(self.vlm, prompt, self.rl.group_size, self.sampling, gens, vision)
            texts = [self.tok.decode(t[: int(n)], skip_special_tokens=True) for t, n in zip(ro.tokens, ro.lengths)]
            groups.append(Group(row, prompt, vision, ro, texts))
        if not groups:
            raise RuntimeError(f"step {self.step_idx}: every video of the batch was unreadable: {self.encoder.skipped}")
        self._score(groups)
        return groups

    def _score(self, groups: list[Group]) -> None:
        g_size = self.rl.group_size
        texts = [t for g in groups for t in g.texts]
        cols = _columns([g.row for g in groups], g_size)
        total, per = compute_rewards(self.reward_specs, texts, cols)  # [B*G], {name: [B*G]}
        _, extra = compute_rewards(self.metric_specs, texts, cols)
        per = {**extra, **per}
        rewards = total.view(len(groups), g_size)  # [B, G]
        adv = ADVANTAGES.get(self.rl.advantage)(rewards, **self.rl.advantage_kwargs)  # [B, G]
        for i, g in enumerate(groups):
            g.rewards, g.advantages = rewards[i], adv[i]
            g.columns = {k: v.view(len(groups), g_size)[i] for k, v in per.items()}

    # ------------------------------------------------------------- log-probs
    def _policy_logp(self, g: Group, grad: bool) -> tuple[Tensor, Tensor]:
        vision = g.vision
        if grad and self.vision_trainable and g.vision is not None:
            vision = self.vlm.encode_vision(g.prompt)  # recompute once per prompt, with gradient
        logits = self.vlm.completion_logits(g.prompt, g.rollout.tokens, vision, self.rl.share_prefix)  # [G, T, V]
        return token_logprobs(logits, g.rollout.tokens, self.rl.temperature), logits  # [G, T]

    def reference_pass(self, groups: list[Group]) -> None:
        needs_old = self.rl.mini_batches > 1 or self.rl.ppo_epochs > 1
        with self.timer("logprob"), torch.no_grad():
            for g in groups:
                if needs_old:
                    g.old_logp = self._policy_logp(g, grad=False)[0]
                if self.reference is not None and self.rl.beta > 0:
                    g.ref_logp = self.reference.logprobs(
                        g, self.rl.temperature, self.rl.share_prefix, not self.vision_trainable
                    )

    # ---------------------------------------------------------------- update
    def update(self, groups: list[Group]) -> dict[str, float]:
        self.vlm.model.train()
        loss_fn = LOSSES.get(self.rl.loss)
        sums: dict[str, float] = {}
        n_mb = self.rl.mini_batches
        per_mb = math.ceil(len(groups) / n_mb)
        grad_norms = []
        for _ in range(self.rl.ppo_epochs):
            for start in range(0, len(groups), per_mb):
                mb = groups[start : start + per_mb]
                num_tokens = float(sum(g.rollout.mask.sum() for g in mb))
                num_seqs = float(sum(g.rollout.mask.shape[0] for g in mb))
                for g in mb:
                    logp, logits = self._policy_logp(g, grad=True)  # [G, T]
                    batch = PolicyBatch(
                        logp=logp,
                        old_logp=g.old_logp if g.old_logp is not None else logp.detach(),
                        ref_logp=g.ref_logp,
                        advantages=g.advantages.to(logp.device),
                        mask=g.rollout.mask,
                        group_size=self.rl.group_size,
                    )
                    out = loss_fn(
                        batch,
                        num_tokens=num_tokens,
                        num_seqs=num_seqs,
                        max_len=self.rl.max_new_tokens,
                        beta=self.rl.beta,
                        kl_estimator=self.rl.kl_estimator,
                        **self.rl.loss_kwargs,
                    )
                    if not torch.isfinite(out.loss):
                        raise FloatingPointError(
                            f"step {self.step_idx}: non-finite loss {float(out.loss)} on row {g.row.id} "
                            f"(rewards {g.rewards.tolist()}, advantages {g.advantages.tolist()})"
                        )
                    out.loss.backward()
                    ent = token_entropy(logits)  # [G, T]
                    m = g.rollout.mask
                    _acc(sums, {**out.metrics, "entropy": float((ent * m).sum() / m.sum().clamp_min(1))}, len(mb))
                grad_norms.append(clip_and_norm(self.params, self.rl.optim.grad_clip))
                self.opt.step()
                self.sched.step()
                self.opt.zero_grad(set_to_none=True)
        n_updates = self.rl.ppo_epochs * math.ceil(len(groups) / per_mb)
        out = {f"loss/{k}": v / n_updates for k, v in sums.items()}
        out["grad_norm"] = float(np.mean(grad_norms))
        return out

    # ------------------------------------------------------------------ loop
    def train_step(self) -> dict[str, float]:
        rows = [self.rows[i] for i in self.sampler.next_batch()]
        groups = self.collect(rows)
        self.reference_pass(groups)
        with self.timer("update"):
            metrics = self.update(groups)
        return {**metrics, **_rollout_metrics(groups), **self.timer.pop(), "lr": self.sched.get_last_lr()[0]}

    def train(self, logger: MetricsLogger, resume: bool = False, stop_after: int | None = None) -> dict:
        """Run until ``rl.steps`` (or ``stop_after`` more steps); checkpoints per config."""
        if resume and (ckpts := list_checkpoints(self.stage_dir)):
            state = load_checkpoint(ckpts[-1], self.vlm.wrapped, self.opt, self.sched, self.sampler)
            self.step_idx = state["step"]
        last: dict = {}
        ck = self.cfg.checkpoint
        with progress_bar("GRPO", self.rl.steps, self.cfg.logging.progress, start=self.step_idx) as bar:
            while self.step_idx < self.rl.steps:
                if stop_after is not None and stop_after <= 0:
                    break
                last = self.train_step()
                self.step_idx += 1
                logger.log(self.step_idx, last)
                bar.advance(f"reward {last['reward/mean']:.3f} acc {last.get('reward/accuracy/mean', float('nan')):.3f}")
                if ck.every and self.step_idx % ck.every == 0:
                    save_checkpoint(self.stage_dir, self.step_idx, self.vlm.wrapped, self.opt, self.sched, self.sampler, ck.keep)
                if stop_after is not None:
                    stop_after -= 1
        return last


def sampling_params(cfg: RecipeConfig, tokenizer, vlm: VLM, max_new_tokens: int | None = None) -> SamplingParams:
    """Rollout sampling settings of a recipe (EOS ids from the tokenizer and generation config)."""
    return SamplingParams(
        max_new_tokens=max_new_tokens or cfg.rl.max_new_tokens,
        temperature=cfg.rl.temperature,
        top_p=cfg.rl.top_p,
        eos_ids=tuple(_eos_ids(tokenizer, vlm)),
        stop_seqs=tuple(tuple(tokenizer.encode(s, add_special_tokens=False)) for s in cfg.rl.stop),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )


def _eos_ids(tokenizer, vlm: VLM) -> list[int]:
    ids = set()
    gen_eos = getattr(getattr(vlm.model, "generation_config", None), "eos_token_id", None)
    for e in [tokenizer.eos_token_id, gen_eos]:
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, (list, tuple)):
            ids.update(e)
    return sorted(ids)


def _columns(rows: list[VideoRow], repeat: int) -> dict[str, list]:
    """Dataset columns for the reward functions, each row repeated for its G completions."""
    dumped = [r.model_dump() for r in rows]
    return {k: [d[k] for d in dumped for _ in range(repeat)] for k in dumped[0]}


def _acc(sums: dict[str, float], metrics: dict[str, float], n: int) -> None:
    for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + float(v) / n


def _rollout_metrics(groups: list[Group]) -> dict[str, float]:
    rewards = torch.stack([g.rewards for g in groups])  # [B, G]
    lengths = torch.cat([g.rollout.lengths for g in groups]).float()  # [B*G]
    out = {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "reward/group_std": float(rewards.std(dim=1).mean()),
        "completion/length": float(lengths.mean()),
        "completion/truncated": float(torch.cat([g.rollout.truncated for g in groups]).float().mean()),
        "completion/zero_std_groups": float((rewards.std(dim=1) == 0).float().mean()),
    }
    for name in groups[0].columns:
        col = torch.stack([g.columns[name] for g in groups]).float()  # [B, G]
        valid = col[~torch.isnan(col)]
        out[f"reward/{name}/mean"] = float(valid.mean()) if valid.numel() else float("nan")
        out[f"reward/{name}/std"] = float(valid.std()) if valid.numel() > 1 else 0.0
    return out
