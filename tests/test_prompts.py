"""PromptEncoder: background prefetch gives the same prompts and the same skips as the synchronous path."""

from __future__ import annotations

import shutil
import threading

import pytest
import torch

from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import load_jsonl
from reelrl.models.load import load_model_and_processor
from reelrl.data import prompts as prompts_mod
from reelrl.video.decode import VideoError
from reelrl.video.sample import VideoSampling

SAMPLING = VideoSampling(nframes=16, min_pixels=3136, max_pixels=3136)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_model_and_processor(tiny_model_dir)[1]


@pytest.fixture()
def rows_with_broken(tiny_gym, tmp_path):
    """Four rows of the gym; the third one's video is truncated."""
    shutil.copytree(tiny_gym / "videos", tmp_path / "videos")
    lines = (tiny_gym / "train.jsonl").read_text().splitlines()[:4]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    rows = load_jsonl(tmp_path / "train.jsonl")
    victim = rows[2].video
    with open(victim, "r+b") as f:
        f.truncate(300)
    return rows


def _same(a, b) -> None:
    assert a.key == b.key
    assert torch.equal(a.input_ids, b.input_ids)
    assert a.vision_inputs.keys() == b.vision_inputs.keys()
    for k in a.vision_inputs:
        assert torch.equal(a.vision_inputs[k], b.vision_inputs[k]), k
    assert torch.equal(a.mm_token_type_ids, b.mm_token_type_ids)
    assert a.meta == b.meta


def test_prefetched_prompts_equal_synchronous_ones(processor, rows_with_broken, monkeypatch):
    rows = rows_with_broken
    sync = PromptEncoder(processor, SAMPLING, "{question}")
    expected = [sync.try_encode(r) for r in rows]
    assert expected[2] is None and list(sync.skipped) == [rows[2].id]

    threads = []
    real = prompts_mod.load_video

    def spy(path, cfg):
        threads.append(threading.current_thread().name)
        return real(path, cfg)

    monkeypatch.setattr(prompts_mod, "load_video", spy)
    fast = PromptEncoder(processor, SAMPLING, "{question}")
    assert fast.prefetch(rows) == 4
    assert fast.prefetch(rows) == 0  # already queued
    got = [fast.try_encode(r) for r in rows]
    fast.close()
    assert len(threads) == 4 and all(t.startswith("reelrl-prefetch") for t in threads)  # decoded in background
    assert got[2] is None
    assert fast.skipped == sync.skipped  # the same counted skip, naming the row
    assert rows[2].id in fast.skipped[rows[2].id]
    for a, b in zip(expected, got):
        if a is not None:
            _same(a, b)
    assert got[0].meta["video"] == rows[0].video and got[0].meta["variant"] == ""
    assert VideoSampling.model_validate_json(got[0].meta["sampling"]) == SAMPLING.resolve(28, 2)  # the tiny's factors


def test_prefetch_error_raises_in_encode_and_variants_are_separate(processor, rows_with_broken):
    rows = rows_with_broken
    enc = PromptEncoder(processor, SAMPLING, "{question}")
    enc.prefetch([rows[2]])
    with pytest.raises(VideoError, match=rows[2].id):
        enc.encode(rows[2])

    flip = lambda frames: frames[:, ::-1].copy()  # noqa: E731  [T, H, W, 3] upside down
    enc.prefetch([rows[0]], transform=flip, variant="flip")
    flipped = enc.encode(rows[0], transform=flip, variant="flip")
    plain = enc.encode(rows[0])
    assert not torch.equal(flipped.vision_inputs["pixel_values_videos"], plain.vision_inputs["pixel_values_videos"])
    assert flipped.meta["variant"] == "flip" and not flipped.meta["unnamed_transform"]
    assert enc.encode(rows[1], transform=flip).meta["unnamed_transform"]  # never put in the embedding cache
    enc.close()
    enc.close()  # idempotent
