"""On-disk video-embedding cache: hits, keys, LRU bound, concurrent writers, exact log-probs."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from reelrl.config import config_from_dict
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import load_jsonl
from reelrl.models.embed_cache import (
    VideoEmbeddingCache,
    deserialize_vision,
    serialize_vision,
    vision_fingerprint,
)
from reelrl.models.load import freeze_vision_tower, load_model_and_processor
from reelrl.models.vlm import VLM, token_logprobs
from reelrl.rollout.hf import SamplingParams, make_generators
from reelrl.train.rl import RLTrainer
from reelrl.video.sample import VideoSampling
from tests.engine_for_tests import generate_group

SAMPLING = VideoSampling(nframes=16, min_pixels=3136, max_pixels=3136)


def total_bytes(cache) -> int:
    """Bytes held by the cache's entries on disk."""
    return sum(size for _, size, _ in cache.entries())


@pytest.fixture(scope="module")
def setup(tiny_gym, tiny_model_dir):
    model, processor = load_model_and_processor(tiny_model_dir)
    freeze_vision_tower(model)
    vlm = VLM(model)
    enc = PromptEncoder(processor, SAMPLING, "{question}")
    rows = load_jsonl(tiny_gym / "train.jsonl")
    return vlm, processor, enc, rows


def _cache(root: Path, vlm, processor, gb: float = 1.0) -> VideoEmbeddingCache:
    return VideoEmbeddingCache.for_model(root, gb, vlm, processor)


def _fake_vision(seed: int, n: int = 256) -> dict:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, 4, generator=g)  # [n, 4]
    return {"video": BaseModelOutputWithPooling(pooler_output=torch.split(emb, [n // 2, n - n // 2]))}


def test_serialize_roundtrip_is_exact():
    vision = _fake_vision(0)
    vision["video"]["last_hidden_state"] = torch.ones(3, 2)  # [3, 2] dropped: unused by the language model
    tensors, structure = serialize_vision(vision)
    back = deserialize_vision(tensors, structure)
    assert type(back["video"]) is BaseModelOutputWithPooling
    assert back["video"].last_hidden_state is None
    assert isinstance(back["video"].pooler_output, tuple) and len(back["video"].pooler_output) == 2
    for a, b in zip(back["video"].pooler_output, vision["video"].pooler_output):
        assert torch.equal(a, b)


def test_miss_then_hit_across_instances(setup, tmp_path):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[0])
    first = _cache(tmp_path, vlm, processor)
    with torch.no_grad():
        a = first.encode(vlm, prompt)
    assert (first.stats.misses, first.stats.hits, first.stats.writes) == (1, 0, 1)
    second = _cache(tmp_path, vlm, processor)  # a later epoch or another process
    calls = []
    real = vlm.encode_vision
    vlm.encode_vision = lambda p: calls.append(p) or real(p)
    try:
        with torch.no_grad():
            b = second.encode(vlm, prompt)
    finally:
        del vlm.encode_vision
    assert (second.stats.misses, second.stats.hits) == (0, 1)
    assert calls == []  # the tower did not run
    for x, y in zip(a["video"].pooler_output, b["video"].pooler_output):
        assert torch.equal(x, y)


def test_key_follows_content_sampling_variant_and_weights(setup, tmp_path):
    vlm, processor, enc, rows = setup
    cache = _cache(tmp_path / "c", vlm, processor)
    video = Path(rows[0].video)
    base = cache.key(video, SAMPLING)
    assert cache.key(video, SAMPLING) == base
    copy = tmp_path / "renamed.mp4"
    shutil.copy(video, copy)
    assert cache.key(copy, SAMPLING) == base  # content, not path
    other = Path(rows[1].video)
    assert cache.key(other, SAMPLING) != base
    copy.write_bytes(other.read_bytes())  # same path, new content
    assert cache.key(copy, SAMPLING) != base
    assert cache.key(video, SAMPLING.model_copy(update={"nframes": 8})) != base
    assert cache.key(video, SAMPLING.model_copy(update={"max_pixels": 6272})) != base
    assert cache.key(video, SAMPLING, variant="shuffled") != base

    tower = vlm.vision_tower()
    fp = vision_fingerprint(tower)
    assert fp == cache.vision_fp
    param = next(tower.parameters())
    with torch.no_grad():
        param[(0,) * param.dim()] += 1e-3  # one trained weight
    try:
        changed = _cache(tmp_path / "c", vlm, processor)
        assert changed.vision_fp != fp
        assert changed.key(video, SAMPLING) != base
    finally:
        with torch.no_grad():
            param[(0,) * param.dim()] -= 1e-3
    assert vision_fingerprint(tower) == fp


def test_grid_mismatch_and_corrupt_file_are_misses(setup, tmp_path):
    vlm, processor, enc, rows = setup
    cache = VideoEmbeddingCache(tmp_path, 10**6, "v", "p")
    cache.put("k" * 40, _fake_vision(1), {"grid_thw": "[[2, 4, 4]]"})
    assert cache.get("k" * 40, grid_thw=torch.tensor([[2, 4, 4]])) is not None
    assert cache.get("k" * 40, grid_thw=torch.tensor([[4, 4, 4]])) is None
    cache.path("k" * 40).write_bytes(b"\x00" * 50)  # garbage
    assert cache.get("k" * 40) is None
    assert cache.stats.bad_files == 1 and not cache.path("k" * 40).exists()


def test_lru_eviction_keeps_total_under_bound(tmp_path):
    probe = VideoEmbeddingCache(tmp_path / "probe", 10**9, "v")
    probe.put("p" * 40, _fake_vision(0))
    entry = total_bytes(probe)
    cache = VideoEmbeddingCache(tmp_path / "c", int(entry * 3.5), "v")
    keys = [f"{i:02d}" * 20 for i in range(6)]
    for k in keys[:3]:
        cache.put(k, _fake_vision(int(k[:2])))
    assert cache.get(keys[0]) is not None  # refresh the oldest: it is now the most recently used
    cache.put(keys[3], _fake_vision(3))
    present = {k for k in keys if cache.path(k).exists()}
    assert present == {keys[0], keys[2], keys[3]}  # keys[1] was least recently used
    for k in keys[4:]:
        cache.put(k, _fake_vision(int(k[:2])))
        assert total_bytes(cache) <= cache.max_bytes
    assert cache.stats.evictions == 3
    assert len(cache.entries()) == 3


def _writer(root: str, worker: int, n: int, max_bytes: int) -> None:
    cache = VideoEmbeddingCache(root, max_bytes, "v")
    for i in range(n):
        k = i if i % 2 == 0 else 1000 * worker + i  # even keys written by both processes
        cache.put(f"{k:040d}", _fake_vision(k))
        cache.get(f"{(k + 3):040d}")


def test_two_processes_writing_concurrently_do_not_corrupt(tmp_path):
    probe = VideoEmbeddingCache(tmp_path / "probe", 10**9, "v")
    probe.put("p" * 40, _fake_vision(0))
    max_bytes = total_bytes(probe) * 12
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "c"), w, 40, max_bytes)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = VideoEmbeddingCache(tmp_path / "c", max_bytes, "v")
    entries = cache.entries()
    assert 0 < len(entries) <= 12
    assert total_bytes(cache) <= max_bytes
    assert not [p for p in (tmp_path / "c").rglob(".tmp-*")]  # no temporary file left behind
    for path, _, _ in entries:
        k = int(path.stem)
        got = cache.get(path.stem)
        assert got is not None, path
        want = _fake_vision(k)["video"].pooler_output
        for a, b in zip(got["video"].pooler_output, want):
            assert torch.equal(a, b), path


def test_cached_embeddings_give_recomputed_logprobs(setup, tmp_path):
    vlm, processor, enc, rows = setup
    prompt = enc.encode(rows[2])
    tok = processor.tokenizer
    params = SamplingParams(max_new_tokens=6, temperature=1.0, eos_ids=(tok.eos_token_id,), pad_id=tok.pad_token_id)
    ro = generate_group(vlm, prompt, 3, params, make_generators(0, 3))
    _cache(tmp_path, vlm, processor).encode(vlm, prompt)  # write
    with torch.no_grad():
        cached = _cache(tmp_path, vlm, processor).encode(vlm, prompt)  # read back from disk
        from_disk = token_logprobs(vlm.completion_logits(prompt, ro.tokens, cached, share_prefix=True), ro.tokens)
        fresh = token_logprobs(vlm.completion_logits(prompt, ro.tokens, vlm.encode_vision(prompt)), ro.tokens)
        pixels = token_logprobs(vlm.completion_logits(prompt, ro.tokens, None, share_prefix=False), ro.tokens)
    assert torch.equal(from_disk, fresh)  # float32 stored exactly
    assert torch.allclose(from_disk, pixels, atol=1e-5)


def test_trainer_uses_cache_and_refuses_trainable_tower(recipe_dict, tmp_path):
    cache_dir = tmp_path / "vcache"
    cfg = dict(recipe_dict, model=dict(recipe_dict["model"], freeze_vision=True))
    cfg["rl"] = dict(recipe_dict["rl"], vision_cache_dir=str(cache_dir), prompts_per_step=2)
    cfg = config_from_dict(cfg)
    model, processor = load_model_and_processor(cfg.model.path)
    rows = load_jsonl(cfg.data.train)[:2]
    enc = PromptEncoder(processor, cfg.video, cfg.prompt.template, cache_size=1)  # re-encode prompts every step
    with pytest.raises(ValueError, match="frozen vision tower"):
        RLTrainer(cfg, VLM(model), processor.tokenizer, enc, rows, tmp_path / "a")
    freeze_vision_tower(model)
    trainer = RLTrainer(cfg, VLM(model), processor.tokenizer, enc, rows, tmp_path / "b")
    trainer.train_step()  # epoch 1: both videos miss and are stored
    trainer.step_idx += 1
    metrics = trainer.train_step()  # epoch 2: both hit
    assert (trainer.vision_cache.stats.misses, trainer.vision_cache.stats.hits) == (2, 2)
    assert metrics["vision_cache/hits"] == 2.0 and metrics["vision_cache/misses"] == 2.0
    assert len(trainer.vision_cache.entries()) == 2
    with pytest.raises(Exception, match="cache_vision"):
        config_from_dict(dict(recipe_dict, rl=dict(recipe_dict["rl"], vision_cache_dir="x", cache_vision=False)))
