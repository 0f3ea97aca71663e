"""The GRPO-family trainer: rollouts -> rewards -> advantages -> policy loss -> update.

Methods plug in by name (``rl.advantage``, ``rl.loss``, ``rl.rewards``) and
through hooks (:mod:`reelrl.train.hooks`: ``rl.row_source``, ``rl.augment``,
``rl.temporal``, ``rl.reward_shaping``, ``rl.group_filter``,
``rl.token_weights``); the loop never branches on a method. One step:

1. the row source hands out B rows; hooks may rewrite each row or its frames;
   decode the videos and encode the prompts (``decode``);
2. run the vision tower once per prompt (``encode``), prefill each prompt once
   and fork its KV cache G ways; the B x G completions of the step decode in
   one batch (``rollout``);
3. score completions with the reward registry; after-score hooks (re-rollouts,
   T-GRPO bonus, reward shaping); the row source observes the results; the
   group filter drops groups (more batches refill it when configured);
4. rewards -> advantages; old-policy (when needed) and reference log-probs,
   reusing the cached video embeddings (``logprob``);
5. policy loss per group (with token weights when configured), summed over
   groups with global normalisers, one optimizer step per mini-batch (``update``).

Data parallelism (``self.dims``, :class:`reelrl.dist.parallel.ParallelDims`):
every rank draws the same rows; each rolls out, scores and trains on every
dp-th prompt of the step. A group's sampling seed depends on its place in the
step, not on the rank, so its tokens are those of a one-process run. After
scoring, the groups' statistics (:class:`~reelrl.train.groups.GroupStats`) are
gathered in step order, so the row source, the group filter and its refills,
the advantage estimator, the loss normalisers and the metrics see the whole
step on every rank; the gradients are summed over the ranks before the
optimizer step. With one process every collective is the identity.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from reelrl.algos import ADVANTAGES, LOSSES, PolicyBatch
from reelrl.config import RecipeConfig
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow
from reelrl.dist.parallel import ParallelDims
from reelrl.models.embed_cache import VideoEmbeddingCache
from reelrl.models.vlm import VLM, EncodedPrompt, token_entropy, token_logprobs
from reelrl.monitor.metrics import RecordLog
from reelrl.rewards import RewardSpec, compute_rewards
from reelrl.rollout.engine import GenerationRequest
from reelrl.rollout.hf import make_generators
from reelrl.seeding import seed_of
from reelrl.train.catalog import resolved_beta
from reelrl.rewards.turns import score_turns
from reelrl.rollout.episodes import EpisodeRunner, completion_logits
from reelrl.train.groups import Group, GroupStats, PromptView
from reelrl.train.hooks import RolloutRequest
from reelrl.train.loop import StageTrainer
from reelrl.train.method import DataState, Hooks, build_row_source
from reelrl.train.policy import ReferencePolicy, sampling_params

__all__ = ["RLTrainer"]


class RLTrainer(StageTrainer):
    """Runs ``cfg.rl.steps`` optimizer steps of the configured method."""

    title = "GRPO"

    @staticmethod
    def needs_reference(cfg: RecipeConfig) -> bool:
        """A frozen reference is loaded only for a KL term."""
        return resolved_beta(cfg.rl) > 0

    def __init__(
        self,
        cfg: RecipeConfig,
        vlm: VLM,
        tokenizer,
        encoder: PromptEncoder,
        rows: list[VideoRow],
        stage_dir: Path,
        reference: ReferencePolicy | None = None,
        dims: ParallelDims | None = None,
    ) -> None:
        super().__init__(cfg, vlm, encoder, stage_dir, dims)
        self.rl, self.tok, self.rows = cfg.rl, tokenizer, rows
        self.beta = resolved_beta(cfg.rl)
        self.reference = reference
        if self.beta > 0 and reference is None:
            raise ValueError("rl.beta > 0 needs a reference policy")
        self.source = build_row_source(cfg, rows)
        self.setup_optimizer(self.rl.optim, self.rl.steps * self.rl.mini_batches * self.rl.ppo_epochs)
        self.total_steps = self.rl.steps
        self.reward_specs = [RewardSpec(r.name, r.weight, r.kwargs) for r in self.rl.rewards]
        self.metric_specs = [RewardSpec("accuracy", 0.0), RewardSpec("format", 0.0)]
        self.sampling = sampling_params(cfg, tokenizer, vlm)
        self.vision_trainable = vlm.vision_trainable()
        self.vision_cache = self._make_vision_cache()
        self.episodes = (EpisodeRunner(cfg.rl.env, vlm, encoder, self.sampling, self.rl.share_prefix)
                         if cfg.rl.env is not None else None)  # multi-turn rollouts (rl.env)
        self.hooks = Hooks(self)
        self.data = DataState(self.source, self.hooks)  # checkpointed data position
        self._draws = 0  # prompts rolled out so far in this step (seed key)
        self.sample_log = RecordLog(self.stage_dir / "samples.jsonl", enabled=self.dims.is_main)

    # --------------------------------------------------------------- collect
    def rollout(self, view: PromptView, index: int, key: tuple[int, ...], n: int | None = None) -> Group | None:
        """One prompt's group (see :meth:`rollout_many`); None if its video is unreadable."""
        return self.rollout_many([(view, index, key, n)])[0]

    def rollout_many(self, requests: list[RolloutRequest]) -> list[Group | None]:
        """Encode each ``(view, index, key, n)``, run its vision tower and prefill once, then decode together.

        ``n`` (default G) completions per prompt; the sampling seed of each is
        derived from ``(seed, step, *key)``, so a group's tokens do not depend
        on which other prompts share its decode batch. At most
        ``rl.decode_batch`` prompts decode in one batch. None for unreadable videos.
        """
        out: list[Group | None] = []
        chunk = self.rl.decode_batch or max(1, len(requests))
        for s in range(0, len(requests), chunk):
            out += self._rollout_batch(requests[s : s + chunk])
        return out

    def _rollout_batch(self, requests: list[RolloutRequest]) -> list[Group | None]:
        ready: list[tuple[int, GenerationRequest]] = []
        for j, (view, _, key, n) in enumerate(requests):
            n = n or self.rl.group_size
            with self.timer("decode"):
                prompt = view.encode(self.encoder)
            if prompt is None:
                continue
            with torch.no_grad(), self.timer("encode"):
                vision = self._encode_vision(prompt) if self.rl.cache_vision else None
            gens = make_generators(seed_of(self.cfg.seed, self.step_idx, *key), n, self.vlm.device)
            ready.append((j, GenerationRequest(prompt, n, gens, vision)))
        out: list[Group | None] = [None] * len(requests)
        with torch.no_grad(), self.timer("rollout"):
            if self.episodes is None:
                rollouts, episodes = self.engine.generate([r for _, r in ready], self.sampling), [None] * len(ready)
            else:
                episodes = self.episodes.generate([(requests[j][0].row, r) for j, r in ready])
                rollouts = [e.rollout for e in episodes]
        for (j, req), ro, ep in zip(ready, rollouts, episodes):
            view, index, key, _ = requests[j]
            if ep is None:
                texts = [self.tok.decode(t[: int(k)], skip_special_tokens=True) for t, k in zip(ro.tokens, ro.lengths)]
            else:
                texts = ["\n\n".join(f"[turn {k + 1}] {t}" for k, t in enumerate(turns)) for turns in ep.turn_texts]
            out[j] = Group(view.row, req.prompt, req.vision, ro, texts, index=index, key=key, view=view, episode=ep)
        return out

    def collect(self, indices: list[int]) -> tuple[list[Group], list[GroupStats]]:
        """Roll out and score this rank's share of the rows ``indices``, run the after-score hooks, tell the row source.

        Returns this rank's groups and every rank's group statistics, in step order.
        """
        self.vlm.model.eval()
        mine = self.dims.share(range(len(indices)))  # places in the step this rank rolls out
        views = [self.hooks.view(self, indices[k]) for k in mine]
        if self.rl.prefetch:
            for view in views:  # row b+1 decodes while row b is encoded and prefilled
                view.prefetch(self.encoder)
        requests = [(view, indices[k], (self._draws + k,), None) for k, view in zip(mine, views)]
        self._draws += len(indices)
        groups = [g for g in self.rollout_many(requests) if g is not None]
        if self.dims.sum(len(groups)) == 0:
            raise RuntimeError(f"step {self.step_idx}: every video of the batch was unreadable: {self.encoder.skipped}")
        self.score(groups)
        groups = self.hooks.after_score(self, groups)
        stats = sorted((s for part in self.dims.gather([GroupStats.of(g) for g in groups]) for s in part),
                       key=lambda s: s.key)
        acc = torch.stack([s.columns["accuracy"] for s in stats]).float().numpy()  # [B, G]
        rewards = torch.stack([s.rewards for s in stats]).float().numpy()  # [B, G]
        self.source.observe(self.step_idx, [s.index for s in stats], acc, rewards)
        return groups, stats

    def gather(self) -> tuple[list[Group], list[GroupStats], list[GroupStats]]:
        """This rank's groups to train on, the statistics of every rank's kept groups, and of every group rolled out.

        The group filter drops groups of each generation batch; more batches
        refill the step up to B (``max_refills``); the first B kept, in step order, train.
        """
        need, kept, seen, local = self.rl.prompts_per_step, [], [], []
        self._draws = 0
        for round_idx in range(1 + self.hooks.max_refills):
            groups, stats = self.collect(self.source.next_batch(self.step_idx))
            seen += stats
            kept += [s for s, k in zip(stats, self.hooks.keep(self, stats, round_idx)) if k]
            local += groups
            if len(kept) >= need:
                break
        kept = kept[:need]
        keys = {s.key for s in kept}
        return [g for g in local if g.key in keys], kept, seen

    def _make_vision_cache(self) -> VideoEmbeddingCache | None:
        """The on-disk embedding cache of ``rl.vision_cache_dir`` (frozen vision towers only)."""
        if self.rl.vision_cache_dir is None:
            return None
        if self.vision_trainable:
            raise ValueError(
                "rl.vision_cache_dir needs a frozen vision tower (model.freeze_vision: true, or LoRA on the "
                "language model only): a training tower changes its embeddings every step"
            )
        return VideoEmbeddingCache.for_model(
            self.rl.vision_cache_dir, self.rl.vision_cache_gb, self.vlm, self.encoder.processor
        )

    def _vision_cache_metrics(self) -> dict[str, float]:
        """Cumulative hits / misses / evictions of the on-disk embedding cache (empty without one)."""
        if self.vision_cache is None:
            return {}
        st = self.vision_cache.stats
        return {"vision_cache/hits": float(st.hits), "vision_cache/misses": float(st.misses),
                "vision_cache/evictions": float(st.evictions)}

    def _encode_vision(self, prompt: EncodedPrompt) -> dict:
        """Video embeddings of a prompt, through the on-disk cache when one is configured."""
        if self.vision_cache is not None:
            return self.vision_cache.encode(self.vlm, prompt)
        return self.vlm.encode_vision(prompt)

    def score(self, groups: list[Group]) -> None:
        """Rewards [G] and per-reward columns of each group (groups may differ in size)."""
        if self.episodes is not None:  # every turn scored (reelrl.train.episodes)
            scored = score_turns(self.reward_specs, self.metric_specs, [g.row for g in groups],
                                 [g.episode.turn_texts for g in groups], [g.episode.turn_columns for g in groups],
                                 self.episodes.max_turns)
            for g, (r, cols) in zip(groups, scored):
                g.rewards, g.columns = r, cols  # [G], {name: [G]}
            return
        texts = [t for g in groups for t in g.texts]
        sizes = [len(g.texts) for g in groups]
        cols = _columns([g.row for g in groups], sizes)
        total, per = compute_rewards(self.reward_specs, texts, cols)  # [sum G], {name: [sum G]}
        _, extra = compute_rewards(self.metric_specs, texts, cols)
        per = {**extra, **per}
        split = {k: v.split(sizes) for k, v in per.items()}
        for i, (g, r) in enumerate(zip(groups, total.split(sizes))):
            g.rewards = r  # [G]
            g.columns = {k: v[i] for k, v in split.items()}

    def advantages(self, groups: list[Group], kept: list[GroupStats]) -> None:
        """Advantages of this rank's ``groups``, estimated over every kept group of the step (``kept``)."""
        rewards = torch.stack([s.rewards for s in kept])  # [B, G]
        adv = ADVANTAGES.get(self.rl.advantage)(rewards, **self.rl.advantage_kwargs)  # [B, G]
        by_key = {s.key: a for s, a in zip(kept, adv)}
        for g in groups:
            g.advantages = by_key[g.key].to(g.rewards.device)  # [G]

    # ------------------------------------------------------------- log-probs
    def _chunks(self, groups: list[Group]) -> list[list[Group]]:
        """``groups`` in runs of ``rl.update_batch`` (one forward pass each); one per group without shared prefixes."""
        size = self.rl.update_batch if self.rl.share_prefix else 1
        return [groups[s : s + size] for s in range(0, len(groups), size)]

    def _policy_logp(self, groups: list[Group], grad: bool) -> list[tuple[Tensor, Tensor]]:
        """Token log-probs ``[G, T]`` and logits ``[G, T, V]`` of each group's completions, in one pass."""
        visions = [g.vision for g in groups]
        if grad and self.vision_trainable:  # recompute once per prompt, with gradient
            visions = [self.vlm.encode_vision(g.prompt) if v is not None else None for g, v in zip(groups, visions)]
        tokens = [g.rollout.tokens for g in groups]
        if self.episodes is not None:  # multi-turn continuations: one prefix-shared pass per group
            logits = [completion_logits(self.vlm, g.prompt, g.rollout, v, self.rl.share_prefix,
                                        grad and self.vision_trainable) for g, v in zip(groups, visions)]
        elif len(groups) == 1:
            logits = [self.vlm.completion_logits(groups[0].prompt, tokens[0], visions[0], self.rl.share_prefix)]
        else:
            logits = self.vlm.completion_logits_many([g.prompt for g in groups], tokens, visions)
        return [(token_logprobs(lg, t, self.rl.temperature), lg) for lg, t in zip(logits, tokens)]  # [G, T], [G, T, V]

    def reference_pass(self, groups: list[Group]) -> None:
        needs_old = self.rl.mini_batches > 1 or self.rl.ppo_epochs > 1
        with self.timer("logprob"), torch.no_grad():
            for chunk in self._chunks(groups) if needs_old else []:
                for g, (old_logp, logits) in zip(chunk, self._policy_logp(chunk, grad=False)):  # [G, T], [G, T, V]
                    g.old_logp = old_logp
                    if self.hooks.token_weights is not None:
                        g.token_weights = self.hooks.token_weights(logits, g.rollout.mask, self.rl.group_size)
            if self.reference is not None and self.beta > 0:
                for chunk in self._chunks(groups):
                    ref = self.reference.logprobs_many(
                        chunk, self.rl.temperature, self.rl.share_prefix, not self.vision_trainable
                    )
                    for g, lp in zip(chunk, ref):
                        g.ref_logp = lp  # [G, T]

    # ---------------------------------------------------------------- update
    def update(self, groups: list[Group], kept: list[GroupStats]) -> dict[str, float]:
        """Optimizer steps on this rank's ``groups``; mini-batches and normalisers are taken over every kept group."""
        self.vlm.model.train()
        sums: dict[str, float] = {}
        per_mb = math.ceil(len(kept) / self.rl.mini_batches)
        grad_norms, skipped = [], 0
        for _ in range(self.rl.ppo_epochs):
            for start in range(0, len(kept), per_mb):
                part = kept[start : start + per_mb]
                norms = {
                    "num_tokens": max(1.0, float(sum(s.tokens for s in part))),
                    "num_seqs": float(sum(len(s.rewards) for s in part)),
                }
                keys = {s.key for s in part}
                mb = [g for g in groups if g.key in keys]
                active = [g for g in mb if not self._inert(g)]
                n_active = self.dims.sum(len(active))
                chunks = [(c, 1.0) for c in self._chunks(active)]
                if self.dims.fsdp:  # as many forward/backward passes on every rank: extra ones weigh 0
                    if not groups:
                        raise RuntimeError(f"step {self.step_idx}: rank {self.dims.rank} has no group to run")
                    chunks += [([groups[0]], 0.0)] * (int(self.dims.max(len(chunks))) - len(chunks))
                for chunk, weight in chunks:
                    into = sums if weight else {}
                    losses = [self._group_loss(g, logp, logits, norms, into, n_active)
                              for g, (logp, logits) in zip(chunk, self._policy_logp(chunk, grad=True))]
                    (torch.stack(losses).sum() * weight).backward()
                if not active:  # the gradient of the skipped groups: zero (the optimizer still steps)
                    for p in self.params:
                        if p.grad is None:  # (FSDP's reduce-scatter may already have put other ranks' here)
                            p.grad = torch.zeros_like(p)
                skipped += len(mb) - len(active)
                grad_norms.append(self.optimizer_step())
        n_updates = self.rl.ppo_epochs * math.ceil(len(kept) / per_mb)
        out = {f"loss/{k}": v / n_updates for k, v in self.dims.sum_metrics(sums).items()}
        out["grad_norm"] = float(np.mean(grad_norms))
        out["batch/skipped_groups"] = self.dims.sum(skipped) / self.rl.ppo_epochs
        return out

    def _inert(self, g: Group) -> bool:
        """Whether ``g`` adds exactly nothing to the gradient: all advantages 0, no KL, an advantage-weighted loss."""
        return (
            self.rl.skip_zero_advantage
            and self.beta == 0
            and bool(LOSSES.trait(self.rl.loss, "advantage_weighted", False))
            and not bool(g.advantages.any())
        )

    def _group_loss(
        self, g: Group, logp: Tensor, logits: Tensor, norms: dict[str, float], sums: dict[str, float], n_mb: int
    ) -> Tensor:
        """The policy loss of one group (global normalisers ``norms``); adds its metrics to ``sums``."""
        if self.hooks.token_weights is not None and g.token_weights is None:
            # single on-policy update: the current logits are the behaviour logits
            g.token_weights = self.hooks.token_weights(logits, g.rollout.mask, self.rl.group_size)
        batch = PolicyBatch(
            logp=logp,  # [G, T]
            old_logp=g.old_logp if g.old_logp is not None else logp.detach(),  # [G, T]
            ref_logp=g.ref_logp,
            advantages=g.advantages.to(logp.device),  # [G]
            mask=g.loss_mask,  # [G, T]
            token_weights=g.token_weights,
            group_size=self.rl.group_size,
        )
        out = LOSSES.get(self.rl.loss)(
            batch,
            **norms,
            max_len=self.rl.max_new_tokens,
            beta=self.beta,
            kl_estimator=self.rl.kl_estimator,
            **self.rl.loss_kwargs,
        )
        self.check_finite(out.loss, f"on row {g.row.id} (rewards {g.rewards.tolist()}, advantages {g.advantages.tolist()})")
        ent = token_entropy(logits)  # [G, T]
        m = g.loss_mask  # [G, T]
        _acc(sums, {**out.metrics, "entropy": float((ent * m).sum() / m.sum().clamp_min(1))}, n_mb)
        return out.loss

    # ------------------------------------------------------------------ loop
    def frozen_models(self) -> list[torch.nn.Module]:
        copy = self.reference.copy if self.reference is not None else None
        return [copy.wrapped] if copy is not None else []

    def train_step(self) -> dict[str, float]:
        with self.full_weights():
            groups, kept, seen = self.gather()
        metrics: dict[str, float] = {"batch/groups": float(len(kept))}
        if kept:  # a group filter may drop every group of the step: then nothing is updated
            self.advantages(groups, kept)
            with self.full_weights():
                self.reference_pass(groups)
            with self.timer("update"):
                metrics.update(self.update(groups, kept))
            if self.step_idx % self.rl.log_samples_every == 0:
                self.log_samples(groups)
        return {**metrics, **_rollout_metrics(seen), **_task_accuracy(seen, self.rows),
                **self.dims.mean_metrics(self.hooks.metrics()),
                **self.timer.pop(), **self._vision_cache_metrics(), **self.vlm.metrics(), "lr": self.sched.get_last_lr()[0]}

    def log_samples(self, groups: list[Group]) -> None:
        """Append every rank's trained groups of this step to ``samples.jsonl`` (rank 0 writes, in step order).

        A record holds what ``reelrl report`` shows of a group: the row (id, task, video, question as shown,
        answer, the view's frame-transform names), every completion with its token hash, reward, advantage
        and per-reward columns (``accuracy``, ``format``, the recipe's rewards; ``null`` where not scored).
        """
        records = [{
            "step": self.step_idx, "key": list(g.key), "row": g.row.id, "task": g.row.task, "answer": g.row.answer,
            "video": g.row.video, "question": g.row.prompt_text(), "variant": g.view.variant if g.view else "",
            "completions": g.texts,
            "token_sha1": [hashlib.sha1(bytes(str(t[: int(n)].tolist()), "ascii")).hexdigest()[:16]
                           for t, n in zip(g.rollout.tokens, g.rollout.lengths)],
            "rewards": g.rewards.tolist(), "advantages": g.advantages.tolist(),
            "columns": {k: v.float().tolist() for k, v in g.columns.items()},
        } for g in groups]
        self.sample_log.write(sorted((r for part in self.dims.gather(records) for r in part), key=lambda r: r["key"]))

    def status(self, metrics: dict[str, float]) -> str:
        return f"reward {metrics['reward/mean']:.3f} acc {metrics.get('reward/accuracy/mean', float('nan')):.3f}"


def _columns(rows: list[VideoRow], repeats: list[int]) -> dict[str, list]:
    """Dataset columns for the reward functions, row i repeated for its ``repeats[i]`` completions."""
    dumped = [r.model_dump() for r in rows]
    keys = dict.fromkeys(k for d in dumped for k in d)  # a row without images has no images key
    return {k: [d.get(k) for d, n in zip(dumped, repeats) for _ in range(n)] for k in keys}


def _acc(sums: dict[str, float], metrics: dict[str, float], n: int) -> None:
    for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + float(v) / n


def _task_accuracy(groups: list[GroupStats], rows: list[VideoRow]) -> dict[str, float]:
    """``task/<task>/accuracy``: the mean ``accuracy`` column of the step's completions of each task."""
    by_task: dict[str, list[Tensor]] = {}
    for g in groups:
        if "accuracy" in g.columns:
            by_task.setdefault(rows[g.index].task, []).append(g.columns["accuracy"].float())  # [G]
    out = {}
    for task, cols in sorted(by_task.items()):
        col = torch.cat(cols)  # [n*G]
        valid = col[~torch.isnan(col)]
        out[f"task/{task}/accuracy"] = float(valid.mean()) if valid.numel() else float("nan")
    return out


def _rollout_metrics(groups: list[GroupStats]) -> dict[str, float]:
    rewards = torch.stack([g.rewards for g in groups])  # [B, G]
    lengths = torch.cat([g.lengths for g in groups]).float()  # [B*G]
    out = {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "reward/group_std": float(rewards.std(dim=1).mean()),
        "completion/length": float(lengths.mean()),
        "completion/truncated": float(torch.cat([g.truncated for g in groups]).float().mean()),
        "completion/zero_std_groups": float((rewards.std(dim=1) == 0).float().mean()),
    }
    for name in groups[0].columns:
        col = torch.stack([g.columns[name] for g in groups]).float()  # [B, G]
        valid = col[~torch.isnan(col)]
        out[f"reward/{name}/mean"] = float(valid.mean()) if valid.numel() else float("nan")
        out[f"reward/{name}/std"] = float(valid.std()) if valid.numel() > 1 else 0.0
    return out
