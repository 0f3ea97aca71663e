"""Tests of reelrl.dist.sp_model: MR-SP vision, completion scoring and prefill against one process.

One module-scoped pair of gloo processes runs every sequence-parallel pass on
inputs written by the parent (weights, a video prompt, completions, loss
weights) and saves the results; the parent computes the one-process references
with :class:`reelrl.models.vlm.VLM` and compares. Float32; tolerances: ATOL
1e-5 on embeddings, logits, log-probs and cache entries, gradients atol 1e-5 +
rtol 1e-4 (as tests/test_dist.py); greedy tokens must be identical.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from reelrl.dist import env
from reelrl.dist.sp_model import (
    sp_completion_logits,
    sp_completion_logprobs,
    sp_encode_vision,
    sp_prefill,
)
from reelrl.models.vlm import VLM, EncodedPrompt, token_entropy, token_logprobs
from reelrl.monitor.memory import TensorMemoryTracker
from reelrl.rollout.hf import Prefill, SamplingParams, decode_groups
from tests.test_dist import PATCH_DIM, tiny_model

WORLD = 2
ATOL = 1e-5
GRID = [3, 8, 8]  # 3 temporal groups over 2 ranks -> 2 + 1; 3*8*8/4 = 48 video tokens
N_VIDEO = GRID[0] * GRID[1] * GRID[2] // 4
# (G, T): "long" puts the completion window across the shard boundary (S = 61 + 64 -> 126, shard 63:
# rank 0 scores 3 tokens, rank 1 61 and holds no video token); "short" puts all video-token shards
# on both ranks (S = 66, shard 33) and the whole window on rank 1 (rank 0 scores none).
COMPLETIONS = {"long": (2, 64), "short": (3, 5)}
DECODE = SamplingParams(max_new_tokens=12, temperature=0.0, suppress_ids=(299, 298, 297, 296))


def make_prompt(g: torch.Generator) -> EncodedPrompt:
    """A 61-token Qwen2.5-VL video prompt (odd: padded to 62 over 2 ranks) consistent with tiny_model's config."""
    text = lambda n: torch.randint(0, 290, (n,), generator=g)
    ids = torch.cat([text(5), torch.tensor([297]), torch.full((N_VIDEO,), 299), torch.tensor([296]), text(6)])[None]
    pixels = torch.randn(GRID[0] * GRID[1] * GRID[2], PATCH_DIM, generator=g)  # [n_patches, C*tp*p*p]
    vision = {"pixel_values_videos": pixels, "video_grid_thw": torch.tensor([GRID]), "second_per_grid_ts": torch.tensor([0.5])}
    return EncodedPrompt("p", ids, vision, mm_token_type_ids=(ids == 299).long() * 2)  # [1, 61]


IMAGE_GRID = [1, 4, 4]  # one image: 16 patches -> 4 tokens
N_IMAGE = IMAGE_GRID[1] * IMAGE_GRID[2] // 4


def make_image_prompt(g: torch.Generator) -> EncodedPrompt:
    """A PRIMO-style 73-token prompt: image, video, image, text (shard 37 over 2 ranks: one image on each)."""
    text = lambda n: torch.randint(0, 290, (n,), generator=g)
    image = lambda: [torch.tensor([297]), torch.full((N_IMAGE,), 298), torch.tensor([296])]
    video = [torch.tensor([297]), torch.full((N_VIDEO,), 299), torch.tensor([296])]
    ids = torch.cat([text(5), *image(), *video, *image(), text(6)])[None]  # [1, 73]
    vision = {
        "pixel_values_videos": torch.randn(GRID[0] * GRID[1] * GRID[2], PATCH_DIM, generator=g),
        "video_grid_thw": torch.tensor([GRID]), "second_per_grid_ts": torch.tensor([0.5]),
        "pixel_values": torch.randn(2 * IMAGE_GRID[1] * IMAGE_GRID[2], PATCH_DIM, generator=g),
        "image_grid_thw": torch.tensor([IMAGE_GRID, IMAGE_GRID]),
    }
    types = (ids == 298).long() + (ids == 299).long() * 2  # [1, 73]
    return EncodedPrompt("pi", ids, vision, mm_token_type_ids=types)


def make_case() -> dict:
    g = torch.Generator().manual_seed(5)
    case: dict = {"state": tiny_model().state_dict(), "prompt": make_prompt(g), "comp": {},
                  "image_prompt": make_image_prompt(g)}
    for name, (rows, length) in COMPLETIONS.items():
        case["comp"][name] = {
            "tokens": torch.randint(0, 290, (rows, length), generator=g),  # [G, T]
            "w_logp": torch.randn(rows, length, generator=g),  # [G, T]
            "w_logits": torch.randn(rows, length, 300, generator=g),  # [G, T, V]
        }
    return case


def _named_grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


def _loss(logits: torch.Tensor, logp: torch.Tensor, c: dict) -> torch.Tensor:
    return (logp * c["w_logp"]).sum() + (logits * c["w_logits"]).mean()


def _cache_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys.detach().clone(), layer.values.detach().clone()) for layer in cache.layers]


def _greedy(vlm: VLM, prompt: EncodedPrompt, logits: torch.Tensor, cache) -> torch.Tensor:
    return decode_groups(vlm, [Prefill(prompt, 2, logits.expand(2, -1), cache)], DECODE)[0].tokens  # [2, T]


def _worker(rank: int, world: int, workdir: str) -> None:
    """One rank: every sequence-parallel pass of the case; results saved for the parent."""
    case = torch.load(Path(workdir) / "case.pt", weights_only=False)
    model = tiny_model()
    model.load_state_dict(case["state"])
    vlm, prompt = VLM(model), case["prompt"]
    out: dict = {"comp": {}}
    vision = sp_encode_vision(vlm, prompt)
    out["vision"] = [v.detach() for v in vision["video"].pooler_output]
    for name, c in case["comp"].items():
        model.zero_grad(set_to_none=True)
        vision = sp_encode_vision(vlm, prompt)  # with gradient: the vision tower trains too
        logits = sp_completion_logits(vlm, prompt, c["tokens"], vision)  # [G, T, V]
        logp = sp_completion_logprobs(vlm, prompt, c["tokens"], vision, temperature=0.7)  # [G, T]
        _loss(logits, logp, c).backward()
        out["comp"][name] = {"logits": logits.detach(), "logp": logp.detach(), "grads": _named_grads(model)}
    # gradient checkpointing: the backward replays each decoder layer, which must run Ulysses again
    model.activation_checkpointing_enable()
    model.train()  # checkpointing is active in training mode only; the tiny model has no dropout
    model.zero_grad(set_to_none=True)
    c = case["comp"]["short"]
    vision = sp_encode_vision(vlm, prompt)
    logits = sp_completion_logits(vlm, prompt, c["tokens"], vision)  # [G, T, V]
    logp = sp_completion_logprobs(vlm, prompt, c["tokens"], vision, temperature=0.7)  # [G, T]
    _loss(logits, logp, c).backward()
    out["checkpointed"] = {"logp": logp.detach(), "grads": _named_grads(model)}
    model.activation_checkpointing_disable()
    model.eval()
    with torch.no_grad():
        lp, ent = sp_completion_logprobs(vlm, prompt, case["comp"]["short"]["tokens"], None, with_entropy=True)
        out["no_vision"] = {"logp": lp, "entropy": ent}
        vision = sp_encode_vision(vlm, prompt)
        last, cache = sp_prefill(vlm, prompt, vision)  # [1, V]
        out["prefill"] = {"logits": last, "cache": _cache_tensors(cache), "tokens": _greedy(vlm, prompt, last, cache)}
    prompt, c = case["image_prompt"], case["comp"]["short"]  # extra images: encoded whole on every rank
    model.zero_grad(set_to_none=True)
    ivision = sp_encode_vision(vlm, prompt)
    logp = sp_completion_logprobs(vlm, prompt, c["tokens"], ivision, temperature=0.7)  # [G, T]
    (logp * c["w_logp"]).sum().backward()
    with torch.no_grad():
        last, _ = sp_prefill(vlm, prompt, ivision)  # [1, V]
    out["images"] = {"image": [v.detach() for v in ivision["image"].pooler_output], "logp": logp.detach(),
                     "grads": _named_grads(model), "prefill": last}
    prompt, c = case["prompt"], case["comp"]["long"]
    with TensorMemoryTracker() as mem:
        sp_completion_logprobs(vlm, prompt, c["tokens"], vision).sum().backward()
    out["memory"] = {"tensor_peak": mem.peak}
    torch.save(out, Path(workdir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    """Spawn the 2-process gloo run once; returns (case, [rank0 results, rank1 results])."""
    workdir = tmp_path_factory.mktemp("sp_model")
    case = make_case()
    torch.save(case, workdir / "case.pt")
    env.spawn_local(_worker, WORLD, args=(str(workdir),), backend="gloo", threads=1)
    return case, [torch.load(workdir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ref(run: tuple[dict, list[dict]]) -> SimpleNamespace:
    """The one-process model and its vision embeddings, on the case's weights and prompt."""
    case, _ = run
    model = tiny_model()
    model.load_state_dict(case["state"])
    vlm = VLM(model)
    return SimpleNamespace(model=model, vlm=vlm, prompt=case["prompt"], vision=vlm.encode_vision(case["prompt"]))


# --------------------------------------------------------------------------- one process (no group)
def test_single_process_equals_vlm() -> None:
    """Without a process group every pass reduces to the VLM's own computation."""
    vlm = VLM(tiny_model())
    prompt = make_prompt(torch.Generator().manual_seed(6))
    tokens = torch.randint(0, 290, (2, 4), generator=torch.Generator().manual_seed(7))  # [G, T]
    vision = vlm.encode_vision(prompt)
    with torch.no_grad():
        got_v = sp_encode_vision(vlm, prompt)["video"].pooler_output
        torch.testing.assert_close(got_v[0], vision["video"].pooler_output[0], atol=ATOL, rtol=0)
        ref_logits = vlm.completion_logits(prompt, tokens, vision, share_prefix=False)  # [G, T, V]
        torch.testing.assert_close(sp_completion_logits(vlm, prompt, tokens, vision), ref_logits, atol=ATOL, rtol=0)
        got_lp = sp_completion_logprobs(vlm, prompt, tokens, vision, temperature=0.7)  # [G, T]
        torch.testing.assert_close(got_lp, token_logprobs(ref_logits, tokens, 0.7), atol=ATOL, rtol=0)
        last, cache = sp_prefill(vlm, prompt, vision)
        ref_last, _ = vlm.prefill(prompt, vision)
        torch.testing.assert_close(last, ref_last, atol=ATOL, rtol=0)
        assert cache.get_seq_length() == prompt.length
    assert vlm.core.language_model.config._attn_implementation == "sdpa"  # restored


def test_prefill_refuses_checkpointing_without_cache() -> None:
    model = tiny_model()
    model.activation_checkpointing_enable()
    model.train()  # with gradients, the checkpointed layers would drop the cache
    vlm = VLM(model)
    prompt = make_prompt(torch.Generator().manual_seed(6))
    with pytest.raises(RuntimeError, match="no KV cache"):
        sp_prefill(vlm, prompt)
    with torch.no_grad():
        assert sp_prefill(vlm, prompt)[1].get_seq_length() == prompt.length


def test_deepstack_features_rejected() -> None:
    vlm = VLM(tiny_model())
    prompt = make_prompt(torch.Generator().manual_seed(6))
    pooled = (torch.zeros(N_VIDEO, 64),)
    vision = {"video": SimpleNamespace(pooler_output=pooled, deepstack_features=[pooled])}
    with pytest.raises(NotImplementedError, match="deepstack"):
        sp_completion_logits(vlm, prompt, torch.zeros(1, 2, dtype=torch.long), vision)


def test_memory_tracker_counts_live_storages() -> None:
    mib = 1 << 20
    with TensorMemoryTracker() as mem:
        a = torch.ones(mib // 4)  # 1 MiB float32
        b = a * 2  # 2 MiB live
        view = b[10:]  # same storage: not counted again
        del a
        c = torch.zeros(mib // 8)  # 0.5 MiB: live 1.5 MiB, below the peak
        assert mem.live == mib + mib // 2
    assert mem.peak == 2 * mib
    del b, view, c
    assert mem.live == 0
    w = torch.randn(64, 64, requires_grad=True)
    with TensorMemoryTracker() as mem:
        (torch.randn(256, 64) @ w).tanh().sum().backward()
    assert mem.peak >= 256 * 64 * 4 * 2  # input and saved tanh output at least


# --------------------------------------------------------------------------- two processes
@pytest.mark.dist
def test_sp_vision_equals_encode_vision(run: tuple[dict, list[dict]], ref: SimpleNamespace) -> None:
    _, results = run
    expect = ref.vision["video"].pooler_output  # tuple of one [48, 64]
    for r in results:
        assert len(r["vision"]) == len(expect) and r["vision"][0].shape == (N_VIDEO, 64)
        torch.testing.assert_close(r["vision"][0], expect[0].detach(), atol=ATOL, rtol=0)


@pytest.mark.dist
@pytest.mark.parametrize("name", list(COMPLETIONS))
def test_sp_completion_equals_one_process(run: tuple[dict, list[dict]], ref: SimpleNamespace, name: str) -> None:
    case, results = run
    c = case["comp"][name]
    ref.model.zero_grad(set_to_none=True)
    vision = ref.vlm.encode_vision(ref.prompt)  # with gradient
    logits = ref.vlm.completion_logits(ref.prompt, c["tokens"], vision, share_prefix=False)  # [G, T, V]
    logp = token_logprobs(logits, c["tokens"], 0.7)  # [G, T]
    _loss(logits, logp, c).backward()
    grads = _named_grads(ref.model)
    for r in results:  # every rank holds the full outputs
        torch.testing.assert_close(r["comp"][name]["logits"], logits.detach(), atol=ATOL, rtol=0)
        torch.testing.assert_close(r["comp"][name]["logp"], logp.detach(), atol=ATOL, rtol=0)
    # each rank's gradient covers its own shard and frames only; their mean is the one-process gradient
    key = "model.language_model.layers.0.mlp.up_proj.weight"
    assert not torch.allclose(results[0]["comp"][name]["grads"][key], grads[key], atol=1e-3)
    got = {n: sum(r["comp"][name]["grads"][n] for r in results) / WORLD for n in grads}
    assert any(g.abs().max() > 0 for n, g in got.items() if n.startswith("model.visual."))
    for n, g in grads.items():
        torch.testing.assert_close(got[n], g, atol=ATOL, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.dist
def test_sp_completion_gradient_checkpointing(run: tuple[dict, list[dict]], ref: SimpleNamespace) -> None:
    """Under gradient checkpointing the replayed layers run Ulysses again (else rank r sees only its shard)."""
    case, results = run
    c = case["comp"]["short"]
    ref.model.zero_grad(set_to_none=True)
    logits = ref.vlm.completion_logits(ref.prompt, c["tokens"], ref.vlm.encode_vision(ref.prompt), share_prefix=False)
    logp = token_logprobs(logits, c["tokens"], 0.7)  # [G, T]
    _loss(logits, logp, c).backward()
    grads = _named_grads(ref.model)
    for r in results:
        torch.testing.assert_close(r["checkpointed"]["logp"], logp.detach(), atol=ATOL, rtol=0)
    got = {n: sum(r["checkpointed"]["grads"][n] for r in results) / WORLD for n in grads}
    for n, g in grads.items():
        torch.testing.assert_close(got[n], g, atol=ATOL, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.dist
def test_sp_logprobs_without_vision_and_entropy(run: tuple[dict, list[dict]], ref: SimpleNamespace) -> None:
    case, results = run
    tokens = case["comp"]["short"]["tokens"]
    with torch.no_grad():
        logits = ref.vlm.completion_logits(ref.prompt, tokens, None, share_prefix=False)  # [G, T, V] from pixels
    for r in results:
        torch.testing.assert_close(r["no_vision"]["logp"], token_logprobs(logits, tokens), atol=ATOL, rtol=0)
        torch.testing.assert_close(r["no_vision"]["entropy"], token_entropy(logits), atol=ATOL, rtol=0)


@pytest.mark.dist
def test_sp_prefill_cache_decodes_like_one_process(run: tuple[dict, list[dict]], ref: SimpleNamespace) -> None:
    _, results = run
    with torch.no_grad():
        last, cache = ref.vlm.prefill(ref.prompt, ref.vision)  # [1, V]
        expect = _cache_tensors(cache)
        tokens = _greedy(ref.vlm, ref.prompt, last, cache)  # [2, 12]
    assert tokens.shape == (2, DECODE.max_new_tokens)
    for r in results:
        p = r["prefill"]
        torch.testing.assert_close(p["logits"], last, atol=ATOL, rtol=0)
        assert len(p["cache"]) == len(expect)
        for (k, v), (ek, ev) in zip(p["cache"], expect):
            assert k.shape == ek.shape == (1, 2, ref.prompt.length, 16)  # full prompt, tail padding dropped
            torch.testing.assert_close(k, ek, atol=ATOL, rtol=0)
            torch.testing.assert_close(v, ev, atol=ATOL, rtol=0)
        assert torch.equal(p["tokens"], tokens)


@pytest.mark.dist
def test_sp_prompt_with_extra_images_equals_one_process(run: tuple[dict, list[dict]], ref: SimpleNamespace) -> None:
    """Image, video, image prompt (PRIMO R1): the images are encoded whole on every rank, the video sharded;
    log-probs, prefill and the SP-averaged gradient equal one process."""
    case, results = run
    prompt, c = case["image_prompt"], case["comp"]["short"]
    ref.model.zero_grad(set_to_none=True)
    vision = ref.vlm.encode_vision(prompt)  # with gradient
    assert set(vision) == {"image", "video"}
    logp = token_logprobs(ref.vlm.completion_logits(prompt, c["tokens"], vision, share_prefix=False), c["tokens"], 0.7)
    (logp * c["w_logp"]).sum().backward()
    grads = _named_grads(ref.model)
    with torch.no_grad():
        last, _ = ref.vlm.prefill(prompt, vision)  # [1, V]
    for r in results:
        got = r["images"]
        assert [v.shape for v in got["image"]] == [(N_IMAGE, 64)] * 2
        for a, b in zip(got["image"], vision["image"].pooler_output):
            torch.testing.assert_close(a, b.detach(), atol=ATOL, rtol=0)
        torch.testing.assert_close(got["logp"], logp.detach(), atol=ATOL, rtol=0)
        torch.testing.assert_close(got["prefill"], last, atol=ATOL, rtol=0)
    mean = {n: sum(r["images"]["grads"][n] for r in results) / WORLD for n in grads}
    key = "model.visual.blocks.0.mlp.up_proj.weight"
    assert grads[key].abs().max() > 0
    for n, g in grads.items():
        torch.testing.assert_close(mean[n], g, atol=ATOL, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.dist
def test_memory_measured_on_every_rank(run: tuple[dict, list[dict]]) -> None:
    _, results = run
    for r in results:
        assert r["memory"]["tensor_peak"] > 0
