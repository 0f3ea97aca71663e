"""KV-cache rollouts with transformers models: prefill the shared prompt once, fork it G ways.

:func:`prefill_group` runs one prompt; :func:`decode_groups` decodes the
completions of several prefilled prompts in one batch (their caches
left-padded and stacked by :meth:`reelrl.models.vlm.VLM.stack_prefills`). Each sequence draws its random numbers from its own
``torch.Generator``, so a batched group and G separate single-sequence
generations with the same generators produce the same tokens (greedy decoding
is exact by construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache

from reelrl.models.vlm import VLM, EncodedPrompt


class StopStrings:
    """Stop strings matched on decoded text, whatever tokens spell them.

    A completion ends at the first token after which its decoded text contains
    one of ``strings`` (the token that completes it is kept, even when it
    carries characters past the string: " </answer>", "</answer>\n" and
    "</answer>" split over several tokens all stop), as transformers'
    ``StopStringCriteria`` and vLLM's ``stop`` do; vLLM additionally cuts the
    text at the string, reelrl keeps whole tokens (the trained tokens are the
    sampled ones). Only the last ``window`` tokens are decoded at each step: a
    token spells at least one character unless it is special, and special
    tokens are decoded too, so a string of ``c`` characters lies within the
    last ``c + 1`` tokens once it completes.
    """

    def __init__(self, tokenizer, strings: tuple[str, ...] | list[str]) -> None:
        self.strings = tuple(s for s in strings if s)
        self.tokenizer = tokenizer
        self.window = max((len(s) for s in self.strings), default=0) + 1

    def __bool__(self) -> bool:
        return bool(self.strings)

    def hit(self, seq: list[int]) -> bool:
        if not self.strings:
            return False
        text = self.tokenizer.decode(seq[-self.window :], skip_special_tokens=False)
        return any(s in text for s in self.strings)


@dataclass
class SamplingParams:
    """How completions are drawn."""

    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 -> greedy
    top_p: float = 1.0
    eos_ids: tuple[int, ...] = ()
    stop_seqs: tuple[tuple[int, ...], ...] = ()  # token-id sequences that end a completion (kept in it)
    stop_strings: StopStrings | None = None  # decoded-text stops (the recipe's rl.stop)
    pad_id: int = 0
    suppress_ids: tuple[int, ...] = ()  # never sampled (vision placeholders: a sampled one breaks the next pass)


@dataclass
class Rollout:
    """G completions of one prompt."""

    tokens: Tensor  # [G, T] right-padded with pad_id
    mask: Tensor  # [G, T] 1.0 on completion tokens (stop token included)
    lengths: Tensor  # [G]
    truncated: Tensor  # [G] bool: hit max_new_tokens without a stop
    context: Any = None  # a multi-turn episode's later turns (reelrl.rollout.multiturn.Continuation), else None


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


def _inverse_cdf(probs: Tensor, generators: list[torch.Generator] | None) -> Tensor:
    """One draw per row of ``probs [N, V]`` (unnormalised ok) -> ``[N]``; row i uses ``generators[i]``."""
    cdf = probs.cumsum(-1)  # [N, V]
    u = torch.stack(
        [torch.rand((), generator=generators[i] if generators else None, device=probs.device)
         for i in range(probs.shape[0])]
    )  # [N]
    u = u * cdf[:, -1]
    return torch.searchsorted(cdf, u.unsqueeze(-1)).squeeze(-1).clamp_max(probs.shape[-1] - 1)  # [N]


def sample_next(logits: Tensor, params: SamplingParams, generators: list[torch.Generator] | None) -> Tensor:
    """One token per row of ``logits [N, V]`` -> ``[N]``; row i uses ``generators[i]``.

    ``params.suppress_ids`` are never returned. A row that draws one redraws
    from the distribution without them (so the result is exactly the masked
    distribution), and rows that do not draw one consume their generator exactly
    as without suppression.
    """
    banned = torch.tensor(params.suppress_ids, dtype=torch.long, device=logits.device)  # [S]
    if params.temperature == 0.0:
        if len(params.suppress_ids):
            logits = logits.index_fill(-1, banned, float("-inf"))  # [N, V]
        return logits.argmax(-1)  # [N]
    full = torch.softmax(logits.float() / params.temperature, dim=-1)  # [N, V]
    probs = _filter_top_p(full, params.top_p)  # [N, V]
    tok = _inverse_cdf(probs, generators)  # [N]
    if len(params.suppress_ids):
        bad = torch.isin(tok, banned)  # [N]
        if bool(bad.any()):
            rows = bad.nonzero().flatten()  # [R]
            masked = probs[rows].index_fill(-1, banned, 0.0)  # [R, V]
            empty = masked.sum(-1) <= 0  # the nucleus held only banned tokens: fall back to the full softmax
            if bool(empty.any()):
                masked[empty] = full[rows][empty].index_fill(-1, banned, 0.0)
            gens = [generators[i] for i in rows.tolist()] if generators else None
            tok[rows] = _inverse_cdf(masked, gens)
    return tok


def _ends_with(seq: list[int], stop: tuple[int, ...]) -> bool:
    return len(seq) >= len(stop) and tuple(seq[-len(stop) :]) == stop


@dataclass
class Prefill:
    """One prompt prefilled for ``n`` completions: next-token logits and the KV cache (batch 1 or ``n``)."""

    prompt: EncodedPrompt
    n: int
    logits: Tensor  # [n, V] next-token logits after the prompt
    cache: DynamicCache  # batch 1 (shared prefix, forked at decode time) or n (naive copies)


@torch.no_grad()
def prefill_group(vlm: VLM, prompt: EncodedPrompt, n: int, vision=None, share_prefix: bool = True) -> Prefill:
    """Run ``prompt`` once (``share_prefix``) or ``n`` times in one batch (the naive baseline).

    ``share_prefix=False`` is what ``generate`` with ``num_return_sequences=n``
    does: the prompt is prefilled ``n`` times and, when ``vision`` is None, the
    video is encoded ``n`` times. Same tokens, more compute.
    """
    if share_prefix:
        last, cache = vlm.prefill(prompt, vision)  # [1, V]
        return Prefill(prompt, n, last.expand(n, -1), cache)  # [n, V]
    logits, cache = vlm.prefill(prompt, vision, copies=n)  # [n, V]
    return Prefill(prompt, n, logits, cache)


@dataclass
class DecodeState:
    """A decode batch in flight: its KV cache, attention mask and where each row's next token goes.

    ``fed[i]`` counts the sampled tokens of row ``i`` already in the cache: the
    last token sampled before a loop stops is not fed, so a multi-turn rollout
    that appends a turn feeds it first (:mod:`reelrl.rollout.multiturn`).
    """

    cache: DynamicCache  # batch N
    mask: Tensor  # [N, K] 1 on cached positions a row attends to (0: left padding, a finished row's pads)
    start: Tensor  # [N] text position of each row's first token of this turn
    logits: Tensor  # [N, V] next-token logits
    done: Tensor  # [N] bool: rows that take no more tokens this turn
    steps: int = 0  # tokens fed to every row in this turn so far


@torch.no_grad()
def decode_loop(
    vlm: VLM, state: DecodeState, params: SamplingParams, gens: list[torch.Generator] | None
) -> list[list[int]]:
    """Sample one turn for every row of ``state`` (updated in place); the tokens of each row.

    Rows already done take none. Finished rows keep being fed a pad token
    (masked out, so a later turn appended to the cache does not see them) to
    keep the batch rectangular; the loop ends when every row is finished.
    """
    n = state.logits.shape[0]
    device = state.logits.device
    out: list[list[int]] = [[] for _ in range(n)]
    done = state.done.clone()  # [N]
    eos = torch.tensor(params.eos_ids, dtype=torch.long, device=device)  # [E]
    logits = state.logits  # [N, V]
    for t in range(params.max_new_tokens):
        if bool(done.all()):
            break
        nxt = sample_next(logits, params, gens)  # [N]
        nxt = torch.where(done, torch.full_like(nxt, params.pad_id), nxt)  # [N]
        live = ~done  # [N] rows whose token of this step is a real one
        finished = torch.isin(nxt, eos) if len(params.eos_ids) else torch.zeros_like(done)  # [N]
        for i, tok in enumerate(nxt.tolist()):
            if not done[i]:
                out[i].append(tok)
                if any(_ends_with(out[i], s) for s in params.stop_seqs) or (
                    params.stop_strings is not None and params.stop_strings.hit(out[i])
                ):
                    finished[i] = True
        done = done | finished
        if bool(done.all()) or t == params.max_new_tokens - 1:
            break
        state.mask = torch.cat([state.mask, live.to(state.mask.dtype).unsqueeze(1)], dim=1)  # [N, K+1]
        logits = vlm.decode_step(nxt.unsqueeze(1), state.cache, state.start + state.steps, state.mask)[:, -1, :]  # [N, V]
        state.steps += 1
    state.logits, state.done = logits, done
    return out


def start_decode(vlm: VLM, prefills: list[Prefill]) -> DecodeState:
    """One decode batch from prefilled prompts: their caches forked and stacked (left-padded), no row done."""
    cache, mask, start = vlm.stack_prefills([p.prompt for p in prefills], [p.cache for p in prefills],
                                            [p.n for p in prefills])  # [N, P_max], [N]
    logits = torch.cat([p.logits for p in prefills])  # [N, V]
    return DecodeState(cache, mask, start, logits, torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device))


def flat_generators(prefills: list[Prefill], generators: list[list[torch.Generator] | None] | None
                    ) -> list[torch.Generator] | None:
    """The per-row generators of a decode batch (None: the global RNG); checks one per completion of every prompt."""
    generators = generators if generators is not None else [None] * len(prefills)
    if len({g is None for g in generators}) > 1:
        raise ValueError("give generators for every prompt or for none (None draws from the global RNG)")
    for p, gs in zip(prefills, generators):
        if gs is not None and len(gs) != p.n:
            raise ValueError(f"need {p.n} generators, got {len(gs)}")
    return None if generators[0] is None else [g for gs in generators for g in gs]


@torch.no_grad()
def decode_groups(
    vlm: VLM,
    prefills: list[Prefill],
    params: SamplingParams,
    generators: list[list[torch.Generator] | None] | None = None,
) -> list[Rollout]:
    """Sample the completions of every prefilled prompt in one batch; one :class:`Rollout` per prompt.

    Row ``j`` of prompt ``i`` draws from ``generators[i][j]``, so the result is
    the same as decoding each prompt alone (and each sequence alone).
    """
    gens = flat_generators(prefills, generators)
    state = start_decode(vlm, prefills)
    out = decode_loop(vlm, state, params, gens)
    rollouts, row = [], 0
    for p in prefills:
        rollouts.append(pack_rollout(out[row : row + p.n], state.done[row : row + p.n], params.pad_id,
                                     state.logits.device))
        row += p.n
    return rollouts


def pack_rollout(seqs: list[list[int]], done: Tensor, pad_id: int, device: torch.device) -> Rollout:
    """Token lists -> a right-padded :class:`Rollout` (``done [n]``: which ended on a stop)."""
    lengths = torch.tensor([len(o) for o in seqs], dtype=torch.long)  # [n]
    width = max(1, int(lengths.max()))
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [n, T]
    for i, o in enumerate(seqs):
        tokens[i, : len(o)] = torch.tensor(o, dtype=torch.long)
    seq_mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()  # [n, T]
    return Rollout(tokens=tokens.to(device), mask=seq_mask.to(device), lengths=lengths, truncated=~done.cpu())


def make_generators(seed: int, n: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """``n`` independent generators seeded ``seed*1000003 + i`` (one per sequence of a group)."""
    gens = []
    for i in range(n):
        g = torch.Generator(device=device)
        g.manual_seed((seed * 1_000_003 + i) % (2**63 - 1))
        gens.append(g)
    return gens
