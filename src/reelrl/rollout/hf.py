"""KV-cache rollouts with transformers models: prefill the shared prompt once, fork it G ways.

Each of the G sequences draws its random numbers from its own ``torch.Generator``,
so a batched group and G separate single-sequence generations with the same
generators produce the same tokens (greedy decoding is exact by construction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reelrl.models.vlm import VLM, EncodedPrompt


@dataclass
class SamplingParams:
    """How completions are drawn."""

    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 -> greedy
    top_p: float = 1.0
    eos_ids: tuple[int, ...] = ()
    stop_seqs: tuple[tuple[int, ...], ...] = ()  # token-id sequences that end a completion (kept in it)
    pad_id: int = 0


@dataclass
class Rollout:
    """G completions of one prompt."""

    tokens: Tensor  # [G, T] right-padded with pad_id
    mask: Tensor  # [G, T] 1.0 on completion tokens (stop token included)
    lengths: Tensor  # [G]
    truncated: Tensor  # [G] bool: hit max_new_tokens without a stop


def _filter_top_p(probs: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of tokens whose mass reaches ``top_p``: ``[N, V] -> [N, V]`` renormalised."""
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(dim=-1, descending=True)  # [N, V]
    cum = sorted_p.cumsum(-1)  # [N, V]
    drop = (cum - sorted_p) >= top_p  # [N, V] mass before this token already reaches top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter(-1, idx, sorted_p)  # [N, V]
    return out / out.sum(-1, keepdim=True)


def sample_next(logits: Tensor, params: SamplingParams, generators: list[torch.Generator] | None) -> Tensor:
    """One token per row of ``logits [N, V]`` -> ``[N]``; row i uses ``generators[i]``."""
    if params.temperature == 0.0:
        return logits.argmax(-1)  # [N]
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)  # [N, V]
    probs = _filter_top_p(probs, params.top_p)
    cdf = probs.cumsum(-1)  # [N, V]
    n = logits.shape[0]
    u = torch.stack(
        [torch.rand((), generator=generators[i] if generators else None, device=logits.device) for i in range(n)]
    )  # [N]
    u = u * cdf[:, -1]
    return torch.searchsorted(cdf, u.unsqueeze(-1)).squeeze(-1).clamp_max(logits.shape[-1] - 1)  # [N]


def _ends_with(seq: list[int], stop: tuple[int, ...]) -> bool:
    return len(seq) >= len(stop) and tuple(seq[-len(stop) :]) == stop


@torch.no_grad()
def generate_group(
    vlm: VLM,
    prompt: EncodedPrompt,
    n: int,
    params: SamplingParams,
    generators: list[torch.Generator] | None = None,
    vision=None,
) -> Rollout:
    """Sample ``n`` completions of ``prompt``: one prefill, KV cache forked ``n`` ways, batched decoding.

    Finished sequences keep being fed a pad token (their outputs are ignored) so
    the batch stays rectangular; decoding stops when all are finished.
    """
    if generators is not None and len(generators) != n:
        raise ValueError(f"need {n} generators, got {len(generators)}")
    last, cache = vlm.prefill(prompt, vision)  # [1, V]
    if n > 1:
        cache.batch_repeat_interleave(n)
    logits = last.expand(n, -1)  # [n, V]
    device = logits.device
    out: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=device)  # [n]
    eos = torch.tensor(params.eos_ids, dtype=torch.long, device=device)  # [E]
    for t in range(params.max_new_tokens):
        nxt = sample_next(logits, params, generators)  # [n]
        nxt = torch.where(done, torch.full_like(nxt, params.pad_id), nxt)  # [n]
        for i in range(n):
            if not done[i]:
                out[i].append(int(nxt[i]))
        finished = torch.isin(nxt, eos) if len(params.eos_ids) else torch.zeros_like(done)  # [n]
        for i in range(n):
            if not done[i] and any(_ends_with(out[i], s) for s in params.stop_seqs):
                finished[i] = True
        done = done | finished
        if bool(done.all()) or t == params.max_new_tokens - 1:
            break
        logits = vlm.step(nxt.unsqueeze(1), cache, prompt, t)[:, -1, :]  # [n, V]
    lengths = torch.tensor([len(o) for o in out], dtype=torch.long)  # [n]
    width = max(1, int(lengths.max()))
    tokens = torch.full((n, width), params.pad_id, dtype=torch.long)  # [n, T]
    for i, o in enumerate(out):
        tokens[i, : len(o)] = torch.tensor(o, dtype=torch.long)
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()  # [n, T]
    return Rollout(tokens=tokens.to(device), mask=mask.to(device), lengths=lengths, truncated=~done.cpu())


def make_generators(seed: int, n: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """``n`` independent generators seeded ``seed*1000003 + i`` (one per sequence of a group)."""
    gens = []
    for i in range(n):
        g = torch.Generator(device=device)
        g.manual_seed((seed * 1_000_003 + i) % (2**63 - 1))
        gens.append(g)
    return gens
