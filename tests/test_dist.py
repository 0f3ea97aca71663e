"""Tests of reelrl.dist: MR-SP sharded vision encoding and Ulysses sequence parallelism.

The multi-process tests spawn ONE pair of gloo processes (module fixture) that run
every sharded computation on inputs written by the parent and save their results;
the parent computes the single-process references and compares (float32, atol 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from reelrl.dist import env
from reelrl.dist.sharded_vision import encode_video_sharded, plan_shards
from reelrl.dist.ulysses import (
    causal_attention,
    gather_sequence,
    sequence_parallel_logits,
    sequence_parallel_logprobs,
    shard_sequence,
    ulysses_attention,
)

WORLD = 2
ATOL = 1e-5
PATCH_DIM = 3 * 2 * 14 * 14  # C * temporal_patch * patch * patch
VISION_GRIDS = {
    "uneven": [[3, 12, 12]],  # one video, 3 temporal groups over 2 ranks -> 2 + 1
    "two_videos": [[1, 8, 8], [2, 12, 12]],  # rank 0: video 0 + group 0 of video 1; rank 1: group 1 of video 1
    "empty_rank": [[1, 8, 8]],  # one group: rank 1 encodes nothing
}
GQA_KV_HEADS = (2, 1)  # 2 kv heads split over ranks; 1 kv head must be repeated


def tiny_model() -> Qwen2_5_VLForConditionalGeneration:
    """A random Qwen2.5-VL with 2 vision blocks (block 1 full attention, block 0 window attention)."""
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            out_hidden_size=64,
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=56,  # 56 / 2 / 14 = 2x2 merged units per window: several windows per frame
            fullatt_block_indexes=[1],
        ),
        text_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=300,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        ),
        video_token_id=299,
        image_token_id=298,
        vision_start_token_id=297,
        vision_end_token_id=296,
    )
    config._attn_implementation = "sdpa"
    return Qwen2_5_VLForConditionalGeneration(config).float().eval()


def make_case() -> dict:
    """Every input of the multi-process run (weights included), built deterministically."""
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    case: dict = {"state": model.state_dict(), "vision": {}, "attn": {}}
    for name, grid in VISION_GRIDS.items():
        grid_t = torch.tensor(grid)  # [n_videos, 3]
        n = int(grid_t.prod(-1).sum())
        pixels = torch.randn(n, PATCH_DIM, generator=g)  # [n_patches, C*tp*p*p]
        weight = torch.randn(n // 4, 64, generator=g)  # [n_tokens, D] loss weights
        case["vision"][name] = {"grid": grid_t, "pixels": pixels, "weight": weight}
    for kv in GQA_KV_HEADS:
        case["attn"][kv] = {
            "q": torch.randn(2, 4, 8, 8, generator=g),  # [B, H, S, d]
            "k": torch.randn(2, kv, 8, 8, generator=g),  # [B, K, S, d]
            "v": torch.randn(2, kv, 8, 8, generator=g),  # [B, K, S, d]
            "w": torch.randn(2, 4, 8, 8, generator=g),  # [B, H, S, d] loss weights
        }
    batch, length = 2, 11  # odd length: padded to 12 for 2 ranks
    ids = torch.randint(0, 290, (batch, length), generator=g)  # [B, S]
    mask = torch.ones(batch, length, dtype=torch.long)  # [B, S]
    mask[1, :3] = 0  # row 1 left-padded
    t_pos = (mask.cumsum(1) - 1).clamp(min=0)  # [B, S]
    bump = (torch.arange(length) % 3)[None]  # [1, S]: h/w rows differ from t as for video tokens
    positions = torch.stack([t_pos, t_pos + bump, t_pos + 2 * bump])  # [3, B, S]
    case["lm"] = {
        "ids": ids,
        "mask": mask,
        "positions": positions,
        "weight": torch.randn(batch, length - 1, generator=g),  # [B, S-1]
    }
    return case


def _named_grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copy of every parameter gradient (zeros where None)."""
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


def _worker(rank: int, world: int, workdir: str) -> None:
    """One rank: run every sharded computation of the case file and save the results."""
    case = torch.load(Path(workdir) / "case.pt", weights_only=False)
    model = tiny_model()
    model.load_state_dict(case["state"])
    visual, lm, head = model.model.visual, model.model.language_model, model.lm_head
    out: dict = {"vision": {}, "attn": {}}
    for name, c in case["vision"].items():
        model.zero_grad(set_to_none=True)
        emb = encode_video_sharded(visual, c["pixels"], c["grid"])  # [n_tokens, D]
        (emb * c["weight"]).sum().backward()
        out["vision"][name] = {"emb": emb.detach(), "grads": _named_grads(visual)}
    for kv, c in case["attn"].items():
        q, k, v = (c[x].clone().requires_grad_(True) for x in "qkv")  # full tensors, leaves
        shards = [shard_sequence(x, 2, rank, world) for x in (q, k, v)]  # [B, *, S/P, d]
        o = ulysses_attention(*shards)  # [B, H, S/P, d]
        (o * shard_sequence(c["w"], 2, rank, world)).sum().backward()
        out["attn"][kv] = {"out": o.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad}
    c = case["lm"]
    model.zero_grad(set_to_none=True)
    embeds = lm.embed_tokens(c["ids"]).detach().requires_grad_(True)  # [B, S, D]
    logits = sequence_parallel_logits(lm, head, embeds, c["positions"], c["mask"])  # [B, S_pad/P, V]
    logp = sequence_parallel_logprobs(lm, head, embeds, c["positions"], c["ids"], c["mask"])  # [B, S-1]
    (logp * c["weight"] * c["mask"][:, :-1] * c["mask"][:, 1:]).sum().backward()  # real query & target
    grads = _named_grads(lm) | {"lm_head." + n: g for n, g in _named_grads(head).items()}
    out["lm"] = {
        "logits": gather_sequence(logits.detach(), dim=1),  # [B, S_pad, V]
        "logp": logp.detach(),
        "grads": grads,
        "d_embeds": embeds.grad,
    }
    torch.save(out, Path(workdir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    """Spawn the 2-process gloo run once; returns (case, [rank0 results, rank1 results])."""
    workdir = tmp_path_factory.mktemp("dist")
    case = make_case()
    torch.save(case, workdir / "case.pt")
    env.spawn_local(_worker, WORLD, args=(str(workdir),), backend="gloo", threads=1)
    return case, [torch.load(workdir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _mean(results: list[dict], get: Callable[[dict], Any]) -> Any:
    """Average over ranks of ``get(result)`` (a tensor or a dict of tensors): the DDP gradient reduction."""
    items = [get(r) for r in results]
    if isinstance(items[0], dict):
        return {k: sum(i[k] for i in items) / len(items) for k in items[0]}
    return sum(items) / len(items)


# --------------------------------------------------------------------------- single-process unit tests
def test_plan_shards_hand_computed() -> None:
    uneven = plan_shards(torch.tensor([[3, 12, 12]]), 2, 2)
    assert [(s.patch_start, s.patch_end) for s in uneven] == [(0, 288), (288, 432)]  # 144 patches per group
    assert [s.grid_thw for s in uneven] == [((2, 12, 12),), ((1, 12, 12),)]
    assert [(s.token_start, s.token_end) for s in uneven] == [(0, 72), (72, 108)]
    two = plan_shards(torch.tensor([[1, 8, 8], [2, 12, 12]]), 2, 2)  # weights 64, 144, 144; half = 176
    assert [s.grid_thw for s in two] == [((1, 8, 8), (1, 12, 12)), ((1, 12, 12),)]
    assert [(s.token_start, s.token_end) for s in two] == [(0, 52), (52, 88)]
    empty = plan_shards(torch.tensor([[1, 8, 8]]), 2, 2)
    assert empty[1].grid_thw == () and empty[1].n_tokens == 0 and empty[0].n_tokens == 16
    four = plan_shards(torch.tensor([[8, 4, 4]]), 4, 2)
    assert [s.grid_thw for s in four] == [((2, 4, 4),)] * 4
    with pytest.raises(ValueError, match="spatial_merge_size"):
        plan_shards(torch.tensor([[2, 5, 4]]), 2, 2)


def test_single_process_fallbacks_equal_plain_calls() -> None:
    """Without a process group every entry point reduces to the unsharded computation."""
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    grid = torch.tensor([[2, 8, 8]])  # [1, 3]
    pixels = torch.randn(128, PATCH_DIM, generator=g)  # [n_patches, C*tp*p*p]
    ref = model.model.visual(pixels, grid_thw=grid).pooler_output  # [32, 64]
    torch.testing.assert_close(encode_video_sharded(model.model.visual, pixels, grid), ref, atol=0, rtol=0)
    ids = torch.randint(0, 290, (1, 7), generator=g)  # [1, S]
    lm = model.model.language_model
    embeds = lm.embed_tokens(ids)  # [1, S, D]
    pos = torch.arange(7)[None, None].expand(3, 1, 7)  # [3, 1, S]
    logits = model.lm_head(lm(inputs_embeds=embeds, position_ids=pos).last_hidden_state)  # [1, S, V]
    ref_lp = torch.log_softmax(logits[:, :-1] / 0.7, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [1, S-1]
    got = sequence_parallel_logprobs(lm, model.lm_head, embeds, pos, ids, temperature=0.7)  # [1, S-1]
    torch.testing.assert_close(got, ref_lp, atol=ATOL, rtol=0)
    assert lm.config._attn_implementation == "sdpa"  # restored after the sharded forward


def test_causal_attention_with_padding_matches_manual_softmax() -> None:
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, 4, 3, generator=g) for _ in range(3))  # [B, H, S, d]
    k1, v1 = k[:, :1], v[:, :1]  # [B, 1, S, d]: GQA with one kv head
    kpm = torch.tensor([[0, 1, 1, 1]])  # first token is padding
    out = causal_attention(q, k1, v1, key_padding_mask=kpm)  # [B, H, S, d]
    for h in range(2):
        for i in range(4):
            keys = [j for j in range(i + 1) if kpm[0, j] or j == i]  # causal, unpadded, or itself
            scores = torch.stack([q[0, h, i] @ k1[0, 0, j] for j in keys]) / 3**0.5  # [n]
            expect = torch.softmax(scores, 0) @ v1[0, 0, keys]  # [d]
            torch.testing.assert_close(out[0, h, i], expect, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- two-process tests
@pytest.mark.dist
@pytest.mark.parametrize("name", list(VISION_GRIDS))
def test_sharded_vision_equals_unsharded(run: tuple[dict, list[dict]], name: str) -> None:
    case, results = run
    model = tiny_model()
    c = case["vision"][name]
    ref = model.model.visual(c["pixels"], grid_thw=c["grid"]).pooler_output  # [n_tokens, D]
    for r in results:  # every rank holds the full, ordered result
        assert r["vision"][name]["emb"].shape == ref.shape
        torch.testing.assert_close(r["vision"][name]["emb"], ref, atol=ATOL, rtol=0)


@pytest.mark.dist
@pytest.mark.parametrize("name", ["uneven", "two_videos"])
def test_sharded_vision_gradient_equals_single_process(run: tuple[dict, list[dict]], name: str) -> None:
    case, results = run
    model = tiny_model()
    c = case["vision"][name]
    (model.model.visual(c["pixels"], grid_thw=c["grid"]).pooler_output * c["weight"]).sum().backward()
    ref = _named_grads(model.model.visual)
    # each rank's grads cover only its own frames: neither rank alone has the full gradient
    rank0 = results[0]["vision"][name]["grads"]["patch_embed.proj.weight"]
    assert not torch.allclose(rank0, ref["patch_embed.proj.weight"], atol=1e-3)
    got = _mean(results, lambda r: r["vision"][name]["grads"])
    for n, g in ref.items():
        torch.testing.assert_close(got[n], g, atol=ATOL, rtol=1e-4, msg=lambda m: f"{n}: {m}")


@pytest.mark.dist
@pytest.mark.parametrize("kv", GQA_KV_HEADS)
def test_ulysses_attention_equals_full_causal(run: tuple[dict, list[dict]], kv: int) -> None:
    case, results = run
    c = case["attn"][kv]
    q, k, v = (c[x].clone().requires_grad_(True) for x in "qkv")
    ref = causal_attention(q, k, v)  # [B, H, S, d]
    (ref * c["w"]).sum().backward()
    got = torch.cat([r["attn"][kv]["out"] for r in results], dim=2)  # [B, H, S, d]
    torch.testing.assert_close(got, ref.detach(), atol=ATOL, rtol=0)
    for name, full in (("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
        torch.testing.assert_close(sum(r["attn"][kv][name] for r in results), full, atol=ATOL, rtol=0)
    # the sharded output is not just the local causal attention of the shard (rank 1 needs rank 0's keys)
    local = causal_attention(*(shard_sequence(x.detach(), 2, 1, 2) for x in (q, k, v)))  # [B, H, S/2, d]
    assert (local - results[1]["attn"][kv]["out"]).abs().max() > 1e-2


@pytest.mark.dist
def test_sequence_parallel_lm_equals_single_process(run: tuple[dict, list[dict]]) -> None:
    case, results = run
    model = tiny_model()
    lm, head, c = model.model.language_model, model.lm_head, case["lm"]
    embeds = lm.embed_tokens(c["ids"]).detach().requires_grad_(True)  # [B, S, D]
    hidden = lm(inputs_embeds=embeds, position_ids=c["positions"], attention_mask=c["mask"]).last_hidden_state
    logits = head(hidden)  # [B, S, V]
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, c["ids"][:, 1:, None]).squeeze(-1)  # [B, S-1]
    valid = c["mask"].bool()  # [B, S]
    (logp * c["weight"] * c["mask"][:, :-1] * c["mask"][:, 1:]).sum().backward()  # real query & target
    for r in results:
        sp_logits = r["lm"]["logits"][:, : logits.shape[1]]  # [B, S, V] (drop the pad position)
        torch.testing.assert_close(sp_logits[valid], logits.detach()[valid], atol=ATOL, rtol=0)
        torch.testing.assert_close(r["lm"]["logp"][valid[:, :-1]], logp.detach()[valid[:, :-1]], atol=ATOL, rtol=0)
    ref_grads = _named_grads(lm) | {"lm_head." + n: g for n, g in _named_grads(head).items()}
    got = _mean(results, lambda r: r["lm"]["grads"])
    for n, g in ref_grads.items():
        torch.testing.assert_close(got[n], g, atol=ATOL, rtol=1e-4, msg=lambda m: f"{n}: {m}")
    torch.testing.assert_close(_mean(results, lambda r: r["lm"]["d_embeds"]), embeds.grad, atol=ATOL, rtol=1e-4)
