"""VerIPO's DPO stage: rollouts -> rollout-aware verifier -> preference pairs -> DPO with a frozen reference.

Paper: Li et al. 2025, "VerIPO" (GRPO -> verifier -> DPO -> GRPO loop; DPO
beta 0.1, lr 5e-7). A recipe lists the stage kind ``dpo`` between RL
stages, e.g. ``stages: [sft, rl, dpo, rl, eval]``; each stage starts from the
model the previous one saved.

The stage runs in two phases:

1. **Pairs** (once, at stage start): ``dpo.prompts`` training rows (a seeded
   sample) each get ``dpo.rollouts_per_prompt`` completions from the current
   policy; :func:`reelrl.train.verifier.verify` judges them and
   :func:`reelrl.train.verifier.build_pairs` makes preference pairs. The
   reference log-probs of every pair are computed here (temperature 1). All
   of it is written to ``<stage_dir>/pairs.pt`` (and readable ``pairs.jsonl``,
   which ``reelrl report`` shows in its rollout browser), so a resumed stage
   trains on the same pairs.
2. **DPO**: ``ceil(dpo.epochs * pairs / dpo.batch_size)`` optimizer steps over
   seeded epoch permutations of the pairs, loss from
   :data:`reelrl.algos.PAIR_LOSSES` (``dpo.loss``) with the global pair count
   as normaliser. A stage that finds no pair trains nothing and saves the
   model unchanged (``dpo/pairs`` = 0 in its result).

Data parallelism: each rank rolls out every dp-th sampled prompt (the sampling
seed depends on the prompt's place in the sample, not on the rank) and the
pairs are gathered in that order, so every rank holds the pairs of a
one-process run (rank 0 writes them); each DPO step's pairs are shared out the
same way and the gradients summed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

from reelrl.algos import PAIR_LOSSES, sequence_logp
from reelrl.config import RecipeConfig
from reelrl.data.curriculum import UniformSource
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow
from reelrl.dist.parallel import ParallelDims
from reelrl.models.vlm import VLM, EncodedPrompt, token_logprobs
from reelrl.monitor.progress import progress_bar
from reelrl.rewards import RewardSpec, compute_rewards
from reelrl.rollout.engine import GenerationRequest
from reelrl.rollout.hf import SamplingParams, make_generators
from reelrl.seeding import rng, seed_of
from reelrl.train.loop import StageTrainer
from reelrl.train.policy import ReferencePolicy, sampling_params
from reelrl.train.verifier import Judge, build_pairs, verify

TAG_DPO = 301


def pad_pair(chosen: list[int], rejected: list[int], pad_id: int, device) -> tuple[Tensor, Tensor]:
    """Right-padded tokens [2, T] and mask [2, T] of a (chosen, rejected) pair."""
    width = max(len(chosen), len(rejected), 1)
    tokens = torch.full((2, width), pad_id, dtype=torch.long)  # [2, T]
    mask = torch.zeros(2, width)  # [2, T]
    for i, seq in enumerate((chosen, rejected)):
        tokens[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1.0
    return tokens.to(device), mask.to(device)


class DPOTrainer(StageTrainer):
    """Collects verified preference pairs once, then runs DPO steps on them (module docstring)."""

    title = "DPO"

    @staticmethod
    def needs_reference(cfg: RecipeConfig) -> bool:
        return True

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
        if reference is None:
            raise ValueError("the DPO stage needs a reference policy")
        self.d, self.tok, self.rows = cfg.dpo, tokenizer, rows
        self.reference = reference
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.vision_trainable = vlm.vision_trainable()
        self.pairs = self._load_or_collect()
        n = len(self.pairs)
        self.total_steps = math.ceil(self.d.epochs * n / self.d.batch_size) if n else 0
        self.data = UniformSource(range(max(n, 1)), min(self.d.batch_size, max(n, 1)), cfg.seed, cfg.data.shuffle)
        self.setup_optimizer(self.d.optim, self.total_steps)
        reasons = Counter(p["reason"] for p in self.pairs)
        self.pair_counts = {"dpo/pairs": n, **{f"dpo/pairs_{k}": v for k, v in sorted(reasons.items())}}

    # ------------------------------------------------------------------ pairs
    def _load_or_collect(self) -> list[dict]:
        path = self.stage_dir / "pairs.pt"
        if path.is_file():
            return torch.load(path, weights_only=False)
        with self.full_weights():
            mine = self.collect_pairs()
        pairs = [p for _, p in sorted((x for part in self.dims.gather(mine) for x in part), key=lambda x: x[0])]
        if self.dims.is_main:
            self.stage_dir.mkdir(parents=True, exist_ok=True)
            torch.save(pairs, path)
            with (self.stage_dir / "pairs.jsonl").open("w", encoding="utf-8") as f:
                for p in pairs:
                    f.write(json.dumps(self.pair_record(p)) + "\n")
        self.dims.barrier()
        return pairs

    def pair_record(self, pair: dict) -> dict:
        """One line of ``pairs.jsonl``: what ``reelrl report`` shows of a pair (its row as the policy saw it, the
        chosen and rejected texts, the verifier's accuracy of each (None for a written self-correction) and the
        reference sequence log-probs)."""
        row = self.rows[pair["row"]]
        return {"row_id": pair["row_id"], "task": row.task, "video": row.video, "question": row.prompt_text(),
                "answer": row.answer, "reason": pair["reason"], "chosen_text": pair["chosen_text"],
                "rejected_text": pair["rejected_text"], "accuracy": pair.get("accuracy"),
                "ref_logp": [float(x) for x in pair["ref_logp"]]}

    def _sampling(self) -> SamplingParams:
        base = sampling_params(self.cfg, self.tok, self.vlm, self.d.max_new_tokens)
        return SamplingParams(**{**base.__dict__, "temperature": self.d.temperature})

    def _vision(self, prompt: EncodedPrompt, grad: bool):
        with torch.set_grad_enabled(grad and self.vision_trainable):
            return self.vlm.encode_vision(prompt)

    @torch.no_grad()
    def collect_pairs(self) -> list[tuple[tuple[int, int], dict]]:
        """Roll out, verify and pair this rank's share of the prompts (module docstring).

        Returns ``((prompt place, pair number), pair)``; each pair holds tokens and reference log-probs.
        """
        d, v = self.d, self.d.verifier
        judge = Judge(v.judge_path, self.vlm.device) if v.judge_path else None
        sampling = self._sampling()
        spec = [RewardSpec(v.accuracy_reward, 1.0)]
        order = rng(self.cfg.seed, TAG_DPO).permutation(len(self.rows))[: d.prompts]
        self.vlm.model.eval()
        pairs: list[tuple[tuple[int, int], dict]] = []
        mine = self.dims.share(list(enumerate(order)))
        with progress_bar("DPO pairs", len(mine), self.cfg.logging.progress and self.dims.is_main) as bar:
            for k, i in mine:
                bar.advance()
                row = self.rows[int(i)]
                prompt = self.encoder.try_encode(row)
                if prompt is None:
                    continue
                vision = self.vlm.encode_vision(prompt)
                gens = make_generators(seed_of(self.cfg.seed, TAG_DPO, k), d.rollouts_per_prompt, self.vlm.device)
                ro = self.engine.generate([GenerationRequest(prompt, d.rollouts_per_prompt, gens, vision)], sampling)[0]
                seqs = [ro.tokens[j, : int(n)].tolist() for j, n in enumerate(ro.lengths)]
                texts = [self.tok.decode(s, skip_special_tokens=True) for s in seqs]
                cols = {key: [val] * len(texts) for key, val in row.model_dump().items()}
                acc, _ = compute_rewards(spec, texts, cols)  # [G]
                verdicts = verify(texts, acc.tolist(), ro.lengths.tolist(), ro.truncated.tolist(), row, v, judge)
                for p in build_pairs(row, texts, verdicts, max_pairs=d.max_pairs_per_prompt,
                                     require_format=v.require_format, self_correction=d.self_correction_pairs):
                    if isinstance(p.rejected, str):
                        rejected, rejected_text = self.tok.encode(p.rejected, add_special_tokens=False), p.rejected
                    else:
                        rejected, rejected_text = seqs[p.rejected], texts[p.rejected]
                    tokens, mask = pad_pair(seqs[p.chosen], rejected, self.pad_id, self.vlm.device)  # [2, T]
                    ref = self.reference.token_logprobs(prompt, tokens, vision, 1.0, self.cfg.rl.share_prefix,
                                                        not self.vision_trainable)  # [2, T]
                    rejected_acc = None if isinstance(p.rejected, str) else verdicts[p.rejected].accuracy
                    pairs.append(((k, len(pairs)), {
                        "row": int(i), "row_id": row.id, "reason": p.reason, "chosen": seqs[p.chosen],
                        "rejected": rejected, "chosen_text": texts[p.chosen], "rejected_text": rejected_text,
                        "accuracy": [verdicts[p.chosen].accuracy, rejected_acc],
                        "ref_logp": sequence_logp(ref, mask).cpu(),  # [2]
                    }))
        return pairs

    # ------------------------------------------------------------------ DPO
    def _pair_logp(self, pair: dict) -> Tensor:
        """Policy sequence log-probs [2] (chosen, rejected) of one pair, with gradient when training."""
        prompt = self.encoder.encode(self.rows[pair["row"]])
        tokens, mask = pad_pair(pair["chosen"], pair["rejected"], self.pad_id, self.vlm.device)  # [2, T]
        vision = self._vision(prompt, grad=torch.is_grad_enabled())
        logits = self.vlm.completion_logits(prompt, tokens, vision, self.cfg.rl.share_prefix)  # [2, T, V]
        return sequence_logp(token_logprobs(logits, tokens), mask)  # [2]

    def _loss(self, pair: dict, num_pairs: float):
        lp = self._pair_logp(pair)  # [2]
        ref = pair["ref_logp"].to(lp.device)  # [2]
        return PAIR_LOSSES.get(self.d.loss)(lp[:1], lp[1:], ref[:1], ref[1:], beta=self.d.beta,
                                            num_pairs=num_pairs, **self.d.loss_kwargs)

    def train_step(self) -> dict[str, float]:
        self.vlm.model.train()
        batch = self.data.next_batch(self.step_idx)
        sums: Counter = Counter()
        mine = [(j, 1.0) for j in self.dims.share(batch)]
        if self.dims.fsdp:  # as many forward/backward passes on every rank: extra ones weigh 0
            mine += [(batch[0], 0.0)] * (int(self.dims.max(len(mine))) - len(mine))
        with self.timer("update"):
            for j, weight in mine:
                out = self._loss(self.pairs[j], float(len(batch)))
                self.check_finite(out.loss, f"on pair {j}")
                (out.loss * weight).backward()
                for k, val in out.metrics.items() if weight else ():  # losses are already divided by the pair count
                    sums[k] += val if k.endswith("_loss") else val / len(batch)
            norm = self.optimizer_step()
        sums = self.dims.sum_metrics(dict(sums))
        return {**{f"dpo/{k}": float(v) for k, v in sums.items()}, **self.pair_counts, "grad_norm": norm,
                "lr": self.sched.get_last_lr()[0], **self.timer.pop()}

    def frozen_models(self) -> list[torch.nn.Module]:
        return [self.reference.copy.wrapped] if self.reference.copy is not None else []

    def status(self, metrics: dict[str, float]) -> str:
        return f"loss {metrics.get('dpo/dpo_loss', float('nan')):.3f}"

    def result(self) -> dict[str, int]:
        return dict(self.pair_counts)
