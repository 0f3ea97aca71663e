"""Streaming thinking (VST): clips appended as video inputs, one forward's log-probs, the gym's clips, the recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import load_jsonl
from reelrl.envs import ENVS, Clip
from reelrl.envs.base import prompt_row
from reelrl.gym import GymSpec, generate_gym
from reelrl.gym.render import PALETTE
from reelrl.models.load import load_model_and_processor
from reelrl.models.processing import encode_prompt, patchify_frames
from reelrl.models.turns import TurnEncoder
from reelrl.models.vlm import VLM, token_logprobs
from reelrl.rewards import RewardSpec
from reelrl.rewards.turns import score_turns
from reelrl.rollout.hf import SamplingParams, make_generators
from reelrl.rollout.multiturn import EpisodeRequest, continuation_logits, rollout_episodes
from reelrl.video.decode import load_video
from reelrl.video.sample import VideoSampling

SAMPLING = VideoSampling(fps=2.0, min_pixels=3136, max_pixels=3136)


@pytest.fixture(scope="module")
def stream_gym(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stream_gym")
    generate_gym(out, GymSpec(families=["stream_order"], frames=32, difficulty=0.5), 6, 0, 4, progress=False)
    return out


@pytest.fixture(scope="module")
def setup(stream_gym, tiny_model_dir):
    model, processor = load_model_and_processor(tiny_model_dir)
    model.eval()
    rewrite = prompt_row("streaming")
    rows = [rewrite(r) for r in load_jsonl(stream_gym / "train.jsonl")]
    enc = PromptEncoder(processor, SAMPLING, "vst")
    return VLM(model), processor, enc, rows


def _params(processor, **kw) -> SamplingParams:
    tok = processor.tokenizer
    return SamplingParams(eos_ids=(tok.eos_token_id,), pad_id=tok.pad_token_id,
                          suppress_ids=(processor.image_token_id, processor.video_token_id), **kw)


def test_gym_writes_each_clip_and_the_clips_show_the_traced_colours(stream_gym):
    rows = load_jsonl(stream_gym / "train.jsonl")
    for row in rows:
        stream = row.meta["stream"]
        colors = row.meta["colors"]
        assert len(stream["clips"]) == 4 and len(stream["thoughts"]) == 4
        assert 2 <= stream["question_after"] <= 4
        whole = load_video(row.video, VideoSampling(nframes=32, min_pixels=3136, max_pixels=3136)).frames
        for k, (clip, color) in enumerate(zip(stream["clips"], colors)):
            assert (clip["start"], clip["end"]) == (2.0 * k, 2.0 * k + 2)
            assert stream["thoughts"][k].startswith(f"Time={2 * k}-{2 * k + 2} s: a") and color in stream["thoughts"][k]
            frames = load_video(Path(row.video).parent / clip["video"],
                                VideoSampling(nframes=8, min_pixels=3136, max_pixels=3136)).frames  # [8, H, W, 3]
            # the clip's file holds the whole video's frames of its time (H.264 round trip: a few levels apart)
            assert np.abs(frames.astype(int) - whole[8 * k : 8 * k + 8].astype(int)).mean() < 4
            ink = frames.reshape(-1, 3)[frames.reshape(-1, 3).max(1) > 60].astype(int)  # the shape's pixels
            dist = {c: np.abs(ink - np.array(rgb)).sum(1).mean() for c, rgb in PALETTE.items()}
            assert min(dist, key=dist.get) == color, (row.id, k, dist)
        # the answer is the colour of the clip after the named one, among what was seen before the question
        x = row.meta["named"]
        assert x + 1 < stream["question_after"]
        assert row.options[ord(row.answer) - 65] == colors[x + 1] and colors[x] in row.question


def test_prompt_row_opens_on_the_first_clip_and_keeps_the_question(stream_gym):
    row = load_jsonl(stream_gym / "train.jsonl")[0]
    first = prompt_row("streaming")(row)
    assert first.video == str(Path(row.video).parent / row.meta["stream"]["clips"][0]["video"])
    assert first.question == "Time=0-2 s. Think about what you saw inside <think></think>."
    assert first.meta["stream"]["question"] == row.prompt_text() and first.answer == row.answer
    assert prompt_row("two_stage_grounding") is None and prompt_row("tests.envs_for_tests:show_frame") is None


def test_turn_encoder_encodes_a_clip_exactly_as_the_prompt_video(setup):
    vlm, processor, enc, rows = setup
    te = TurnEncoder(processor, system=enc.system)
    frames = np.random.default_rng(0).integers(0, 255, (4, 56, 56, 3), dtype=np.uint8)
    turn = te.encode("Time=2-4 s.", [], closed=False, clips=[Clip(frames, fps=2.0, start=2.0)])
    text = processor.tokenizer.decode(turn.ids, skip_special_tokens=False)
    # 4 frames = 2 temporal patches; 56x56 = 4x4 patches merged 2x2: 4 tokens each -> 8 video tokens
    assert text == ("<|im_end|>\n<|im_start|>user\n<|vision_start|>" + processor.video_token * 8
                    + "<|vision_end|>Time=2-4 s.<|im_end|>\n<|im_start|>assistant\n")
    assert turn.video_grid_thw.tolist() == [[2, 4, 4]] and turn.pixel_values is None
    assert turn.second_per_grid_ts.tolist() == [1.0]  # temporal_patch_size 2 / 2 fps
    ref = encode_prompt(processor, "q", frames, 2.0)  # the prompt path's video tensors for the same frames
    torch.testing.assert_close(turn.pixel_values_videos, ref["pixel_values_videos"], rtol=0, atol=0)
    torch.testing.assert_close(turn.second_per_grid_ts, ref["second_per_grid_ts"])
    assert torch.equal(turn.pixel_values_videos, patchify_frames(frames, processor.spec)[0])
    with pytest.raises(ValueError, match="multiple of 28"):
        te.encode("x", [], closed=False, clips=[Clip(frames[:, :50], fps=2.0)])
    with pytest.raises(ValueError, match="fps > 0"):
        te.encode("x", [], closed=False, clips=[Clip(frames, fps=0.0)])


def _whole_forward(vlm, processor, prompt, toks, clips_pv, clips_grid, clips_secs):
    """Logits of ONE transformers forward over the whole conversation, every video passed as pixels (transformers
    builds the 3D RoPE index itself from mm_token_type_ids, the grids and second_per_grid_ts)."""
    ids = torch.cat([prompt.input_ids[0], toks])[None]  # [1, P+T]
    types = torch.zeros_like(ids)
    types[ids == processor.video_token_id] = 2
    vi = prompt.vision_inputs
    out = vlm.model(input_ids=ids, mm_token_type_ids=types,
                    pixel_values_videos=torch.cat([vi["pixel_values_videos"], clips_pv]),
                    video_grid_thw=torch.cat([vi["video_grid_thw"], clips_grid]),
                    second_per_grid_ts=torch.cat([vi["second_per_grid_ts"], clips_secs]))
    return out.logits[0, prompt.length - 1 : -1]  # [T, V]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_streaming_episode_equals_one_forward_over_the_whole_conversation(setup, temperature):
    vlm, processor, enc, rows = setup
    te = TurnEncoder(processor, system=enc.system)
    row = next(r for r in rows if r.meta["stream"]["question_after"] >= 3)
    prompt = enc.encode(row)
    video = enc.frames(row)
    envs = [ENVS.get("streaming")(row, video) for _ in range(2)]
    params = _params(processor, max_new_tokens=4, temperature=temperature)
    (ep,) = rollout_episodes(vlm, te, [EpisodeRequest(prompt, envs, make_generators(3, 2))], params)
    ro, ctx = ep.rollout, ep.rollout.context
    q = row.meta["stream"]["question_after"]
    assert [len(t) for t in ep.turn_texts] == [q + 1, q + 1]
    assert ep.turn_columns[0][:q] == [None] * q and ep.turn_columns[0][q] == {}
    assert ep.infos[0][q] == {"after_question": True} and ep.turn_lengths[0][q] <= 4
    assert ctx.clips_per_row == [q - 1, q - 1] and ctx.video_grid_thw.tolist() == [[2, 4, 4]] * (2 * (q - 1))
    vision = vlm.encode_vision(prompt)
    with torch.no_grad():
        shared = continuation_logits(vlm, prompt, ro.tokens, ctx, vision, share_prefix=True)  # [2, T, V]
        whole = continuation_logits(vlm, prompt, ro.tokens, ctx, vision, share_prefix=False)
    per_clip = 2 * 4 * 4  # patches of one clip: t * h * w
    for i in range(2):
        n = int(ro.lengths[i])
        toks, model = ro.tokens[i, :n], ro.mask[i, :n].bool()
        assert int((toks == processor.video_token_id).sum()) == 8 * (q - 1)  # later clips' tokens, never in the loss
        assert not bool((toks[model] == processor.video_token_id).any())
        mine = slice(i * (q - 1), (i + 1) * (q - 1))
        with torch.no_grad():
            ref = _whole_forward(vlm, processor, prompt, toks, ctx.pixel_values_videos[mine.start * per_clip:
                                 mine.stop * per_clip], ctx.video_grid_thw[mine],
                                 torch.full((q - 1,), 1.0))  # [n, V]
        if temperature == 0.0:  # greedy: every model token is the argmax of the one forward at its position
            assert torch.equal(ref.argmax(-1)[model], toks[model])
        lp_ref = token_logprobs(ref[None], toks[None])[0]  # [n]
        for logits in (shared, whole):
            lp = token_logprobs(logits[i : i + 1, :n], toks[None])[0]
            torch.testing.assert_close(lp[model], lp_ref[model], atol=1e-5, rtol=1e-5)


def test_demonstration_is_one_sft_example_with_every_clip(setup):
    vlm, processor, enc, rows = setup
    sft = PromptEncoder(processor, SAMPLING, "vst", stage="sft")
    row = rows[0]
    demo = ENVS.get("streaming")(row, sft.frames(row)).demonstration()
    q = row.meta["stream"]["question_after"]
    targets = [sft.prompt.target(r, a) for r, a in demo.answers]
    colors, x = row.meta["colors"], row.meta["named"]
    assert targets == ([f"<think>{t}</think>" for t in row.meta["stream"]["thoughts"][:q]]
                       + [f"<think>After {colors[x]} came {colors[x + 1]}.</think><answer>{row.answer}</answer>"])
    ex = sft.encode_sft_episode(row, targets, demo.observations)
    labelled = ex["labels"][0][ex["labels"][0] != -100]
    assert processor.tokenizer.decode(labelled, skip_special_tokens=False) == "".join(t + "<|im_end|>" for t in targets)
    assert ex["video_grid_thw"].tolist() == [[2, 4, 4]] * q  # the first clip, then q - 1 more
    assert ex["second_per_grid_ts"].tolist() == [1.0] * q
    assert int((ex["mm_token_type_ids"] == 2).sum()) == 8 * q
    assert "Think briefly inside <think></think>, then answer inside <answer></answer>." in \
        processor.tokenizer.decode(ex["input_ids"][0])
    with torch.no_grad():
        nll = vlm.sft_nll([ex], processor.tokenizer.pad_token_id)
    assert torch.isfinite(nll) and float(nll) > 0


def test_only_the_answer_turn_is_rewarded():
    from reelrl.data.schema import VideoRow

    row = VideoRow(id="r", video="v.mp4", question="q", options=["red", "blue"], answer="B",
                   problem_type="multiple_choice")
    texts = [[["<think>a</think>", "<think>b</think>", "<answer>B</answer>"],
              ["<think>a</think>", "<think>b</think>", "<answer>A</answer>"]]]
    cols = [[[None, None, {}], [None, None, {}]]]
    ((reward, per),) = score_turns([RewardSpec("accuracy", 1.0)], [RewardSpec("format", 0.0)], [row], texts, cols, 3)
    assert reward.tolist() == [1.0, 0.0] and per["accuracy"].tolist() == [1.0, 0.0]
    assert all(math.isnan(v) for v in per["turn1/accuracy"].tolist() + per["turn2/accuracy"].tolist())
    assert per["turn3/accuracy"].tolist() == [1.0, 0.0]


def test_malformed_streams_are_named(stream_gym):
    from reelrl.data.schema import DataError

    row = load_jsonl(stream_gym / "train.jsonl")[0]
    bad = row.model_copy(update={"meta": {**row.meta, "stream": {"clips": [{"video": "c.mp4", "start": 2, "end": 1}]}}})
    with pytest.raises(DataError, match=r"row train-stream_order-000000: meta.stream.clips\[0\]"):
        prompt_row("streaming")(bad)
    bad = row.model_copy(update={"meta": {**row.meta, "stream": {**row.meta["stream"], "question_after": 9}}})
    with pytest.raises(DataError, match="question_after must be 1..4"):
        prompt_row("streaming")(bad)
    with pytest.raises(DataError, match="meta.stream.clips"):
        prompt_row("streaming")(row.model_copy(update={"meta": {}}))


def test_vst_recipe_runs_sft_eval_rl_eval_and_reports_latency(stream_gym, tiny_model_dir, tmp_path):
    from reelrl.pipeline import Pipeline, load_recipe

    cfg = load_recipe("vst", [
        f"output_dir={tmp_path / 'run'}", f"model.path={tiny_model_dir}", "data.gym.enabled=false",
        f"data.train={stream_gym / 'train.jsonl'}", f"data.test={stream_gym / 'test.jsonl'}", "sft.epochs=1",
        "sft.batch_size=3", "sft.micro_batch_size=3", "rl.steps=1", "rl.prompts_per_step=2", "rl.group_size=2",
        "rl.max_new_tokens=4", "eval.max_new_tokens=4", "logging.progress=false", "checkpoint.every=0"])
    assert cfg.rl.env.name == "streaming" and cfg.rl.advantage == "dr_grpo" and cfg.stages == ["sft", "eval", "rl", "eval"]
    Pipeline(cfg).run()
    ev = json.loads((tmp_path / "run" / "3-eval" / "eval.json").read_text())
    assert ev["n"] == 4 and 0 < ev["tokens_after_question"] <= 4
    # every row reached the first turn, a thought: not scored
    assert ev["turns"]["turn1"] == {"n": 4, "scored": 0, "accuracy": None, "accuracy_all": None}
    assert sum(t["scored"] for t in ev["turns"].values()) == 4  # one answer turn per row
    sample = json.loads((tmp_path / "run" / "3-eval" / "eval_samples.jsonl").read_text().splitlines()[0])
    assert sample["turn_columns"][0] is None and sample["turn_columns"][-1] == {}
    m = json.loads((tmp_path / "run" / "2-rl" / "metrics.jsonl").read_text().splitlines()[0])
    assert "reward/accuracy/mean" in m and math.isnan(m["reward/turn1/accuracy/mean"])


def test_an_environment_reward_enters_through_env_reward():
    from reelrl.data.schema import VideoRow

    row = VideoRow(id="r", video="v.mp4", question="q", answer="x", problem_type="free_form")
    texts = [[["a", "b"], ["c"]]]
    cols = [[[{"env_reward": 0.25}, {"env_reward": 0.5}], [{"env_reward": -1.0}]]]
    ((reward, per),) = score_turns([RewardSpec("env_reward", 2.0)], [RewardSpec("format", 0.0)], [row], texts, cols, 2)
    assert reward.tolist() == [1.5, -2.0]  # 2 * (0.25 + 0.5), 2 * -1
    assert per["turn2/env_reward"][0] == 0.5 and math.isnan(float(per["turn2/env_reward"][1]))
    with pytest.raises(ValueError, match="env_reward must be a finite number"):
        score_turns([RewardSpec("env_reward", 1.0)], [RewardSpec("format", 0.0)], [row], [[["a"]]],
                    [[[{"env_reward": float("nan")}]]], 1)


def test_a_groups_environments_decode_each_clip_once_and_a_rewritten_clip_is_read_again(stream_gym, tmp_path):
    import shutil

    from reelrl.data.schema import DataError

    src = load_jsonl(stream_gym / "train.jsonl")[1]
    for c in src.meta["stream"]["clips"]:  # a private copy of the row's clips
        shutil.copy(Path(src.video).parent / c["video"], tmp_path / Path(c["video"]).name)
    clips = [{**c, "video": Path(c["video"]).name} for c in src.meta["stream"]["clips"]]
    row = prompt_row("streaming")(src.model_copy(update={
        "video": str(tmp_path / "whole.mp4"), "meta": {**src.meta, "stream": {**src.meta["stream"], "clips": clips}}}))
    video = load_video(row.video, SAMPLING)
    envs = [ENVS.resolve("streaming")(row, video) for _ in range(4)]  # a group of 4 trajectories
    first = [e.clip(1) for e in envs]
    assert all(c.frames is first[0].frames for c in first)  # one decode, shared
    assert first[0].frames.shape == video.frames.shape
    # the file changes (clip 2's content written over clip 1's): the next episode reads the new file
    target = tmp_path / clips[1]["video"]
    shutil.copy(tmp_path / clips[2]["video"], target)
    again = envs[0].clip(1)
    assert again.frames is not first[0].frames
    assert np.array_equal(again.frames, envs[0].clip(2).frames)
    target.unlink()
    with pytest.raises(DataError, match=rf"row {row.id}: clip 2 \(.*{clips[1]['video']}\)"):
        envs[0].clip(1)
