"""MR-SP stage 2: DeepSpeed-Ulysses sequence parallelism for causal attention.

Ulysses (Jacobs et al., 2023, "DeepSpeed Ulysses") as used by LongVILA-R1's MR-SP:
each of the P ranks holds a contiguous shard of the token sequence (rank r holds
positions ``[r*S/P, (r+1)*S/P)``). Everything outside attention is per-token and
runs on the shard; attention does an all-to-all that trades the sequence shard
for a head shard (``[B, H, S/P, d] -> [B, H/P, S, d]``), runs ordinary causal
attention over the full sequence for its H/P heads, and all-to-alls back. The
result is exact (same maths as one process; only float summation order differs).

GQA: when the key/value head count is divisible by P the kv heads are split
like the query heads (rank r gets query heads ``[r*H/P, (r+1)*H/P)`` and kv heads
``[r*K/P, (r+1)*K/P)``, which are exactly the kv heads those query heads use);
otherwise k/v are repeated to H heads before the all-to-all (more traffic).

Transformers integration: :func:`register_ulysses_attention` registers the
attention function ``"reelrl_ulysses"`` with ``AttentionInterface``; the context
manager :func:`sequence_parallel` switches a text model to it, and
:func:`sequence_parallel_logprobs` runs a Qwen2-VL / Qwen2.5-VL language model
over a sequence sharded across ranks and returns per-token log-probs of the full
sequence. Not supported in the sharded path: decoding from a non-empty KV cache
(an empty cache passed to the forward just stores each rank's post-RoPE key/value
shards; :func:`reelrl.dist.sp_model.sp_prefill` gathers them), sliding-window
layers, ``output_attentions``, packed sequences (4-row position ids' text row is
dropped), reentrant gradient checkpointing (non-reentrant checkpointing replays
Ulysses in the backward). The name is not registered with ``AttentionMaskInterface``,
so the model builds no mask; causality and padding are applied here after the all-to-all.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reelrl.dist import env

ULYSSES_ATTENTION = "reelrl_ulysses"

AttnFn = Callable[[Tensor, Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- sequence helpers
def shard_sequence(x: Tensor, dim: int, rank: int, world: int) -> Tensor:
    """Rank ``rank``'s contiguous shard of ``x`` along ``dim`` (length must be divisible by ``world``).

    A plain slice: its gradient flows into that slice only.
    """
    n = x.shape[dim]
    if n % world:
        raise ValueError(f"reelrl.dist.ulysses.shard_sequence: length {n} along dim {dim} not divisible by {world}")
    step = n // world
    return x.narrow(dim, rank * step, step)


def gather_sequence(x: Tensor, dim: int, group: env.Group = None) -> Tensor:
    """Concatenate the equal-length shards of all ranks along ``dim`` (differentiable).

    Backward sums the gradient over ranks and slices this rank's shard (convention
    in :mod:`reelrl.dist.env`). Identity without a process group.
    """
    return env.all_gather_autograd(x, sizes=None, dim=dim, group=group)


def pad_to_multiple(x: Tensor, dim: int, multiple: int, value: float = 0) -> Tensor:
    """Right-pad ``x`` along ``dim`` with ``value`` to a length divisible by ``multiple``."""
    extra = (-x.shape[dim]) % multiple
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_full(shape, value)], dim=dim)


def seq_to_heads(x: Tensor, group: env.Group = None) -> Tensor:
    """All-to-all ``[B, H, S/P, d] -> [B, H/P, S, d]`` (scatter heads, gather sequence)."""
    return env.all_to_all_autograd(x, scatter_dim=1, gather_dim=2, group=group)


def heads_to_seq(x: Tensor, group: env.Group = None) -> Tensor:
    """All-to-all ``[B, H/P, S, d] -> [B, H, S/P, d]`` (scatter sequence, gather heads)."""
    return env.all_to_all_autograd(x, scatter_dim=2, gather_dim=1, group=group)


# --------------------------------------------------------------------------- attention
def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Repeat each kv head ``n_rep`` times: ``[B, K, S, d] -> [B, K*n_rep, S, d]``."""
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=1)  # [B, K*n_rep, S, d]


def causal_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float | None = None,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Causal scaled-dot-product attention with GQA: q [B, H, S, d], k/v [B, K, S, d] -> [B, H, S, d].

    ``key_padding_mask`` [B, S] (True / 1 = real token) hides padded keys; each query
    may always see itself, so fully padded rows give finite (meaningless) outputs.
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads % kv_heads:
        raise ValueError(f"reelrl.dist.ulysses.causal_attention: {heads} query heads, {kv_heads} kv heads")
    k = repeat_kv(k, heads // kv_heads)  # [B, H, S, d]
    v = repeat_kv(v, heads // kv_heads)  # [B, H, S, d]
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, dropout_p=dropout_p)
    s = q.shape[2]
    causal = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()  # [S, S]
    allowed = causal[None, None] & key_padding_mask.bool()[:, None, None, :]  # [B, 1, S, S]
    allowed = allowed | torch.eye(s, dtype=torch.bool, device=q.device)[None, None]  # [B, 1, S, S]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, dropout_p=dropout_p)


def ulysses_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_fn: AttnFn | None = None,
    group: env.Group = None,
) -> Tensor:
    """Sequence-parallel attention: shards q [B, H, S/P, d], k/v [B, K, S/P, d] -> [B, H, S/P, d].

    ``attn_fn(q, k, v)`` sees the full sequence for H/P heads (q [B, H/P, S, d], k/v
    [B, K', S, d]) and must return [B, H/P, S, d]; default: causal SDPA with GQA.
    ``H`` must be divisible by P; ``K`` is split if divisible by P, else repeated to H.
    Without a process group this is just ``attn_fn(q, k, v)``.
    """
    attn_fn = attn_fn or causal_attention
    world = env.world_size(group)
    if world == 1:
        return attn_fn(q, k, v)
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads % world:
        raise ValueError(
            f"reelrl.dist.ulysses.ulysses_attention: {heads} query heads not divisible by the sequence-parallel "
            f"world size {world}"
        )
    if kv_heads % world:
        k = repeat_kv(k, heads // kv_heads)  # [B, H, S/P, d]
        v = repeat_kv(v, heads // kv_heads)  # [B, H, S/P, d]
    q_full = seq_to_heads(q, group)  # [B, H/P, S, d]
    k_full = seq_to_heads(k, group)  # [B, K/P, S, d]
    v_full = seq_to_heads(v, group)  # [B, K/P, S, d]
    out = attn_fn(q_full, k_full, v_full)  # [B, H/P, S, d]
    return heads_to_seq(out, group)  # [B, H, S/P, d]


# --------------------------------------------------------------------------- transformers integration
@dataclass
class _SPState:
    """What the registered attention function needs during one sequence-parallel forward."""

    group: env.Group
    key_padding_mask: Tensor | None  # [B, S_pad] of the whole (padded) sequence, or None


_STATE: contextvars.ContextVar[_SPState | None] = contextvars.ContextVar("reelrl_ulysses_state", default=None)


def _hf_ulysses_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """``AttentionInterface`` entry: query [B, H, S/P, d], key/value [B, K, S/P, d] -> ([B, S/P, H, d], None)."""
    state = _STATE.get()
    if state is None:
        raise RuntimeError(
            f"reelrl.dist.ulysses: attention implementation '{ULYSSES_ATTENTION}' called outside "
            "reelrl.dist.ulysses.sequence_parallel(...)"
        )
    if attention_mask is not None:
        raise ValueError(
            "reelrl.dist.ulysses: got a prepared attention mask; pass the 2D padding mask to sequence_parallel()"
        )
    if kwargs.get("sliding_window") is not None:
        raise NotImplementedError("reelrl.dist.ulysses: sliding-window attention layers are not supported")
    kpm = state.key_padding_mask
    drop = dropout if module.training else 0.0

    def attn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return causal_attention(q, k, v, scale=scaling, key_padding_mask=kpm, dropout_p=drop)  # [B, H/P, S, d]

    out = ulysses_attention(query, key, value, attn_fn=attn, group=state.group)  # [B, H, S/P, d]
    return out.transpose(1, 2).contiguous(), None  # [B, S/P, H, d]


def register_ulysses_attention() -> str:
    """Register ``"reelrl_ulysses"`` with transformers' ``AttentionInterface`` (idempotent); returns the name."""
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(ULYSSES_ATTENTION, _hf_ulysses_attention)
    return ULYSSES_ATTENTION


@contextlib.contextmanager
def sequence_parallel(
    language_model: nn.Module, group: env.Group = None, key_padding_mask: Tensor | None = None
) -> Iterator[None]:
    """Within the block, ``language_model``'s attention runs as Ulysses over ``group``.

    ``language_model`` is a transformers text model whose attention dispatches on
    ``config._attn_implementation`` (e.g. ``model.model.language_model``);
    ``key_padding_mask`` [B, S_pad] (1 = real token) covers the whole padded sequence.
    The previous implementation is restored on exit. The vision tower is untouched.
    Layers under (non-reentrant) gradient checkpointing replay their forward in
    the backward with Ulysses attention over the same group (see
    :func:`_replay_checkpoints_in`), so the backward may run after the block.
    """
    state = _SPState(group=group, key_padding_mask=key_padding_mask)
    checkpointed = _replay_checkpoints_in(language_model, state)
    try:
        with _attention_state(language_model, state):
            yield
    finally:
        for module, func in checkpointed:
            module._gradient_checkpointing_func = func


@contextlib.contextmanager
def _attention_state(language_model: nn.Module, state: _SPState) -> Iterator[None]:
    """Switch ``language_model``'s attention to Ulysses with ``state`` (restored on exit)."""
    config = language_model.config
    previous = config._attn_implementation
    config._attn_implementation = register_ulysses_attention()
    token = _STATE.set(state)
    try:
        yield
    finally:
        _STATE.reset(token)
        config._attn_implementation = previous


def _replay_checkpoints_in(language_model: nn.Module, state: _SPState) -> list[tuple[nn.Module, Any]]:
    """Make gradient-checkpointed layers replay their forward in Ulysses mode; returns what to restore.

    transformers' checkpointed layers (``GradientCheckpointingLayer``) replay
    their forward during the backward, after :func:`sequence_parallel` has
    exited: the replay would run the model's own attention on the local shard.
    Each layer's ``_gradient_checkpointing_func`` (``torch.utils.checkpoint``)
    gets a ``context_fn`` whose recompute context re-enters the Ulysses state
    (thread-independent: the autograd engine may replay on another thread).
    Needs non-reentrant checkpointing (transformers' default).
    """
    saved = []
    for module in language_model.modules():
        func = getattr(module, "_gradient_checkpointing_func", None)
        if func is None or not getattr(module, "gradient_checkpointing", False):
            continue
        if getattr(func, "keywords", {}).get("use_reentrant", False):
            raise NotImplementedError(
                "reelrl.dist.ulysses: reentrant gradient checkpointing cannot replay Ulysses attention; "
                "enable it with gradient_checkpointing_kwargs={'use_reentrant': False}"
            )

        def replaying(function: Callable, *args: Any, _func: Any = func, **kwargs: Any) -> Any:
            contexts = lambda: (contextlib.nullcontext(), _attention_state(language_model, state))
            return _func(function, *args, context_fn=contexts, **kwargs)

        saved.append((module, func))
        module._gradient_checkpointing_func = replaying
    return saved


def _text_positions(position_ids: Tensor, batch: int, length: int) -> Tensor:
    """Normalise position ids to mrope [3, B, S] (accepts [B, S], [3, B, S] and packed [4, B, S])."""
    if position_ids.ndim == 2:
        position_ids = position_ids[None].expand(3, -1, -1)  # [3, B, S]
    elif position_ids.ndim == 3 and position_ids.shape[0] == 4:
        position_ids = position_ids[1:]  # [3, B, S]
    if position_ids.ndim != 3 or position_ids.shape[0] != 3 or tuple(position_ids.shape[1:]) != (batch, length):
        raise ValueError(
            f"reelrl.dist.ulysses: position_ids must be [B, S] or [3, B, S] with B={batch}, S={length}; "
            f"got {tuple(position_ids.shape)}"
        )
    return position_ids


def sequence_parallel_logits(
    language_model: nn.Module,
    lm_head: nn.Module,
    inputs_embeds: Tensor,
    position_ids: Tensor,
    attention_mask: Tensor | None = None,
    group: env.Group = None,
) -> Tensor:
    """Logits of this rank's sequence shard: [B, S_pad/P, V] for a full sequence padded to S_pad.

    ``inputs_embeds`` [B, S, D] (text embeddings with the video embeddings already
    scattered in) and ``position_ids`` [3, B, S] (mrope, from ``get_rope_index``) cover
    the whole sequence and are identical on every rank; the sequence is right-padded
    to a multiple of P (padding sits after every real token, so causal attention
    never sees it) and each rank runs the language model on its shard only.
    ``attention_mask`` [B, S] (1 = real token) is needed only for padded batches.
    """
    batch, length = inputs_embeds.shape[:2]
    world, me = env.world_size(group), env.rank(group)
    positions = _text_positions(position_ids, batch, length)  # [3, B, S]
    embeds = pad_to_multiple(inputs_embeds, dim=1, multiple=world)  # [B, S_pad, D]
    positions = pad_to_multiple(positions, dim=2, multiple=world)  # [3, B, S_pad]
    kpm = None
    if attention_mask is not None:
        kpm = pad_to_multiple(attention_mask.to(torch.bool), dim=1, multiple=world, value=False)  # [B, S_pad]
    local_embeds = shard_sequence(embeds, 1, me, world)  # [B, S_pad/P, D]
    local_positions = shard_sequence(positions, 2, me, world)  # [3, B, S_pad/P]
    with sequence_parallel(language_model, group, kpm):
        hidden = language_model(
            inputs_embeds=local_embeds, position_ids=local_positions, use_cache=False
        ).last_hidden_state  # [B, S_pad/P, D]
    return lm_head(hidden)  # [B, S_pad/P, V]


def sequence_parallel_logprobs(
    language_model: nn.Module,
    lm_head: nn.Module,
    inputs_embeds: Tensor,
    position_ids: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    group: env.Group = None,
    temperature: float = 1.0,
) -> Tensor:
    """Per-token log-probs of a causal LM run sequence-parallel: [B, S-1], the same on every rank.

    Entry t is ``log p(input_ids[:, t+1] | tokens <= t)`` at ``temperature``, as one
    process would compute from ``log_softmax(logits[:, :-1] / T)``. Logits stay local
    ([B, S_pad/P, V] per rank, never gathered); only the [B, S_pad/P] log-probs are
    all-gathered. Differentiable, gradient convention of :mod:`reelrl.dist.env`
    (replicated weights: average gradients over the group).
    """
    batch, length = input_ids.shape
    world, me = env.world_size(group), env.rank(group)
    logits = sequence_parallel_logits(
        language_model, lm_head, inputs_embeds, position_ids, attention_mask, group
    )  # [B, S_pad/P, V]
    targets = torch.cat([input_ids[:, 1:], input_ids.new_zeros(batch, 1)], dim=1)  # [B, S]; last is a dummy
    targets = pad_to_multiple(targets, dim=1, multiple=world)  # [B, S_pad]
    local_targets = shard_sequence(targets, 1, me, world)  # [B, S_pad/P]
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [B, S_pad/P, V]
    local = logp.gather(-1, local_targets.unsqueeze(-1)).squeeze(-1)  # [B, S_pad/P]
    full = gather_sequence(local, dim=1, group=group)  # [B, S_pad]
    return full[:, : length - 1]  # [B, S-1]
