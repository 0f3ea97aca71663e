"""PRIMO R1: multi-visual prompts (image, video, image), the push gym families, the progress reward, eval MAE,
and the primo_r1 recipe end to end."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from reelrl.data.images import row_images
from reelrl.data.schema import DataError, VideoRow, load_jsonl
from reelrl.gym import GymSpec, generate_gym
from reelrl.gym.manipulation import GRID, path_length
from reelrl.rewards import REWARDS, RewardSpec
from reelrl.rewards.progress import parse_progress, progress_error, progress_score
from reelrl.video.decode import decode_frames, load_video
from reelrl.video.sample import VideoSampling
from tests.gym_pixels import color_masks

SPEC84 = dict(families=["push_progress", "push_failure"], height=84, width=84, difficulty=0.3, seed=5)
SAMPLING84 = VideoSampling(nframes=16, min_pixels=84 * 84, max_pixels=84 * 84)


@pytest.fixture(scope="module")
def push_gym(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("push_gym")
    generate_gym(out, GymSpec(**SPEC84), 24, 0, 4, progress=False)
    return out


# ------------------------------------------------------------------ the progress reward


def _row(answer: str, ptype: str = "progress", **kw) -> dict:
    return {"answer": answer, "problem_type": ptype, **kw}


def test_progress_reward_on_hand_computed_cases() -> None:
    reward = REWARDS.get("progress")
    cases = [  # (completion, gold, meta, expected): max(0, 1 - |p - g| / range)
        ("<think>x</think><answer>0.7</answer>", "0.5", {}, 0.8),
        ("<answer> .5 </answer>", "0.5", {}, 1.0),
        ("<answer>70%</answer>", "0.5", {}, 0.8),  # a percentage of the range
        ("<answer>0.25</answer>", "1", {}, 0.25),
        ("<answer>1.5</answer>", "0.2", {}, 0.0),  # 1 - 1.3 clipped at 0
        ("<answer>-0.1</answer>", "0.1", {}, 0.8),
        ("<answer>5e-1</answer>", "0.5", {}, 1.0),
        ("<answer>70</answer>", "50", {"progress_range": [0, 100]}, 0.8),  # PRIMO's percent scale: 1 - 20/100
        ("<answer>70%</answer>", "50", {"progress_range": [0, 100]}, 0.8),
    ]
    got = reward([c for c, *_ in cases], answer=[g for _, g, *_ in cases], meta=[m for _, _, m, _ in cases],
                 problem_type=["progress"] * len(cases))
    assert got == pytest.approx([e for *_, e in cases], abs=1e-12)


@pytest.mark.parametrize("completion", [
    "<answer>about 0.7</answer>", "<answer>0.3 or 0.5</answer>", "<answer>seventy</answer>",
    "<answer>nan</answer>", "<answer></answer>", "<answer>0.7.1</answer>", "<answer>0.5 0.5</answer>",
    "<think>0.5</think> 0.5", "0.5", "<answer>1e</answer>", "<answer>inf</answer>", "<answer>0x1</answer>",
])
def test_malformed_progress_answers_score_zero(completion: str) -> None:
    assert REWARDS.get("progress")([completion], answer=["0.5"], meta=[{}]) == [0.0]
    assert REWARDS.get("accuracy")([completion], answer=["0.5"], problem_type=["progress"], meta=[{}]) == [0.0]


def test_progress_reward_skips_other_rows_and_accuracy_dispatches_to_it() -> None:
    texts = ["<answer>0.7</answer>", "<answer>A</answer>"]
    cols = dict(answer=["0.5", "A"], problem_type=["progress", "multiple_choice"], options=[None, ["yes", "no"]],
                meta=[{}, {"failure_detection": True}])
    assert REWARDS.get("progress")(texts, **cols) == [pytest.approx(0.8), None]
    assert REWARDS.get("accuracy")(texts, **cols) == [pytest.approx(0.8), 1.0]
    assert parse_progress("0.5 ") == 0.5 and parse_progress("x") is None and parse_progress(None) is None
    assert progress_score(None, 0.5) == 0.0 and progress_error(None, 0.5) == 1.0
    assert progress_error(1.5, 0.2) == 1.0 and progress_error(0.7, 0.5) == pytest.approx(0.2)  # capped at the range


def test_progress_rows_are_validated() -> None:
    base = dict(id="r", video="v.mp4", question="q", problem_type="progress")
    VideoRow(**base, answer="0.5")
    VideoRow(**base, answer="70", meta={"progress_range": [0, 100]})
    for answer, meta, words in [("1.5", {}, "outside the progress range"), ("half", {}, "must be a number"),
                                ("0.5", {"progress_range": [1, 0]}, "meta.progress_range")]:
        with pytest.raises(ValueError, match=words):
            VideoRow(**base, answer=answer, meta=meta)


# ------------------------------------------------------------------ the images field


def test_images_field_is_validated_at_load_with_file_line_and_field(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")  # existence is all load_jsonl checks without decoding
    good = dict(id="a", video="v.mp4", question="q", answer="0.5", problem_type="progress")
    cases = [
        ([{"role": "initial_state", "frame": 0, "path": "x.png"}], "field images.0: .*exactly one of path and frame"),
        ([{"role": "initial_state"}], "exactly one of path and frame"),
        ([{"role": "current_state", "frame": -1, "position": "after"},
          {"role": "initial_state", "frame": 0, "position": "before"}], r"images\[1\].position"),
        ([{"role": "s", "frame": 0, "position": "middle"}], "field images.0.position"),
        ([], "images is empty"),
        ([{"role": "current_state", "path": "missing.png"}], r"field images\[0\].path: image file not found"),
    ]
    for images, words in cases:
        f = tmp_path / "rows.jsonl"
        f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "images": images}) + "\n")
        with pytest.raises(DataError, match=re.escape(f"{f}:2") + ".*" + words):
            load_jsonl(f)
    (tmp_path / "cur.png").write_bytes(b"")
    f.write_text(json.dumps({**good, "images": [{"role": "current_state", "path": "cur.png"}]}) + "\n")
    assert load_jsonl(f)[0].images[0].path == str(tmp_path / "cur.png")  # resolved like the video


def test_image_frames_and_files_are_read_at_the_video_size(push_gym: Path, tmp_path: Path) -> None:
    from PIL import Image

    row = load_jsonl(push_gym / "train.jsonl")[0]
    video = load_video(row.video, SAMPLING84)
    before, after = row_images(row, video, 28)
    assert [r.role for r in row.images] == ["initial_state", "current_state"] and len(before) == len(after) == 1
    n = video.info.num_frames
    assert np.array_equal(before[0], decode_frames(row.video, [0], size=(84, 84))[0])
    assert np.array_equal(after[0], decode_frames(row.video, [n - 1], size=(84, 84))[0])
    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(tmp_path / "wide.png")
    wide = row.model_copy(update={"images": [row.images[0].model_copy(update={"frame": None,
                                                                             "path": str(tmp_path / "wide.png")})]})
    img = row_images(wide, video, 28)[0][0]
    assert img.shape[0] % 28 == 0 and img.shape[1] % 28 == 0 and img.shape[0] * img.shape[1] <= 84 * 84
    assert img.shape[1] > img.shape[0]  # the aspect ratio is kept
    far = row.model_copy(update={"images": [row.images[0].model_copy(update={"frame": n})]})
    with pytest.raises(DataError, match=rf"row {row.id}: field images\[0\].frame: frame {n} lies outside"):
        row_images(far, video, 28)


# ------------------------------------------------------------------ multi-visual prompts


def _stub_dir(tmp_path: Path) -> Path:
    """The torchvision stand-in of tests/test_models.py (transformers' processors import torchvision)."""
    from tests import test_models

    stub = tmp_path / "stub" / "torchvision"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(textwrap.dedent(test_models._TORCHVISION_STUB))
    info = tmp_path / "stub" / "torchvision-0.28.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n")
    return tmp_path / "stub"


_HF_SCRIPT = '''
import sys, numpy as np, torch
from transformers import AutoProcessor
hf = AutoProcessor.from_pretrained(sys.argv[1], local_files_only=True)
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (8, 56, 84, 3), dtype=np.uint8)
a, b = (rng.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(2))
msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "image"},
                                     {"type": "text", "text": "How far along is it?"}]}]
text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
meta = [{"fps": 2.0, "total_num_frames": 8, "frames_indices": list(range(8))}]
ref = hf(text=[text], images=[a, b], videos=[frames], video_metadata=meta, do_sample_frames=False, do_resize=False,
         do_convert_rgb=False, return_tensors="pt")
torch.save({k: torch.as_tensor(v) for k, v in ref.items()}, sys.argv[2])
print("HF OK")
'''


def _inputs():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (8, 56, 84, 3), dtype=np.uint8)  # [T, H, W, 3]
    a, b = (rng.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(2))  # [H, W, 3]
    return frames, a, b


def _prompt(enc: dict):
    from reelrl.models.vlm import PROMPT_KEYS, EncodedPrompt

    return EncodedPrompt("k", enc["input_ids"], {k: enc[k] for k in PROMPT_KEYS if k in enc}, enc["mm_token_type_ids"])


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    from reelrl.models.load import load_model_and_processor

    model, processor = load_model_and_processor(tiny_model_dir)
    return model.eval(), processor


def test_image_video_image_prompt_equals_the_hf_processor_and_one_plain_forward(
        tmp_path: Path, tiny_model_dir: Path, loaded) -> None:
    """The HF processor path (AutoProcessor, images + video) gives the same tensors, and the reelrl path
    (embeddings encoded once, VLM.positions = get_rope_index over image + video) the logits of one plain
    transformers forward that builds everything itself."""
    from reelrl.models.processing import encode_prompt
    from reelrl.models.vlm import VLM

    env = dict(os.environ)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        env["PYTHONPATH"] = os.pathsep.join([str(_stub_dir(tmp_path)), env.get("PYTHONPATH", "")])
    (tmp_path / "hf.py").write_text(_HF_SCRIPT)
    proc = subprocess.run([sys.executable, str(tmp_path / "hf.py"), str(tiny_model_dir), str(tmp_path / "hf.pt")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "HF OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
    ref = torch.load(tmp_path / "hf.pt")
    model, processor = loaded
    frames, a, b = _inputs()
    got = encode_prompt(processor, "How far along is it?", frames, 2.0, images_before=[a], images_after=[b])
    assert set(got) == set(ref)
    for k in ref:
        assert ref[k].shape == got[k].shape and ref[k].dtype == got[k].dtype and torch.equal(ref[k], got[k]), k
    vlm = VLM(model)
    prompt = _prompt(got)
    with torch.no_grad():
        plain = model(**ref, use_cache=False).logits  # [1, P, V]
        pos, _ = vlm.positions(prompt)  # [3, 1, P]
        ours = model(input_ids=prompt.input_ids, position_ids=pos, mm_encoder_outputs=vlm.encode_vision(prompt),
                     use_cache=False).logits  # [1, P, V]
        last, _ = vlm.prefill(prompt, vlm.encode_vision(prompt))  # [1, V]
        raw_last, _ = vlm.prefill(prompt, None)  # pixels through _vision_kwargs
    assert torch.allclose(ours, plain, atol=1e-5, rtol=0)
    assert torch.allclose(last, plain[:, -1], atol=1e-5, rtol=0) and torch.allclose(raw_last, last, atol=1e-5, rtol=0)
    expected, _ = model.model.get_rope_index(ref["input_ids"], ref["mm_token_type_ids"], ref["image_grid_thw"],
                                             ref["video_grid_thw"], ref["second_per_grid_ts"])
    assert torch.equal(pos, expected)
    runs = [k for k, _ in itertools.groupby(got["mm_token_type_ids"][0].tolist()) if k]
    assert runs == [1, 2, 1]  # image, video, image


def test_multi_visual_embeddings_equal_the_concatenated_single_visual_ones(loaded) -> None:
    """What the placeholders of the image/video/image prompt receive equals each visual input encoded alone
    (its own video-only prompt, each image alone), concatenated in token order; and a batch mixing it with a
    video-only prompt prefills as the prompts alone."""
    from reelrl.models.processing import encode_images, encode_prompt
    from reelrl.models.vlm import VLM

    model, processor = loaded
    vlm = VLM(model)
    frames, a, b = _inputs()
    multi = _prompt(encode_prompt(processor, "How far?", frames, 2.0, images_before=[a], images_after=[b]))
    alone = _prompt(encode_prompt(processor, "How far?", frames, 2.0))
    seen = {}

    def grab(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()  # [1, P, D]

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            vision = vlm.encode_vision(multi)
            vlm.prefill(multi, vision)
            video = vlm.encode_vision(alone)["video"].pooler_output[0]  # [n_video, D]
            images = [vlm.encode_images(*encode_images(processor, [img])).pooler_output[0] for img in (a, b)]
    finally:
        handle.remove()
    types = multi.mm_token_type_ids[0]  # [P]
    got = seen["embeds"][0, types > 0]  # [n_a + n_video + n_b, D]
    want = torch.cat([images[0], video, images[1]])  # token order: image, video, image
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6, rtol=0)
    assert torch.allclose(torch.cat(vision["image"].pooler_output), torch.cat(images), atol=1e-6, rtol=0)
    assert torch.allclose(vision["video"].pooler_output[0], video, atol=1e-6, rtol=0)
    with torch.no_grad():
        batch = vlm.prefill_batch([multi, alone], [vlm.encode_vision(multi), vlm.encode_vision(alone)])  # [2, V]
        one = [vlm.prefill(p, vlm.encode_vision(p))[0][0] for p in (multi, alone)]  # [V] each
    for i in range(2):
        assert torch.allclose(batch.logits[i], one[i], atol=1e-5, rtol=0)


def test_prompt_encoder_places_the_rows_images_around_the_video(push_gym: Path, loaded) -> None:
    from reelrl.data.prompts import PromptEncoder

    _, processor = loaded
    row = load_jsonl(push_gym / "train.jsonl")[0]
    enc = PromptEncoder(processor, SAMPLING84, "reelrl")
    prompt = enc.encode(row)
    runs = [k for k, _ in itertools.groupby(prompt.mm_token_type_ids[0].tolist()) if k]
    assert runs == [1, 2, 1] and prompt.vision_inputs["image_grid_thw"].tolist() == [[1, 6, 6], [1, 6, 6]]
    example = enc.encode_sft(row, enc.target(row))
    assert torch.equal(example["pixel_values"], prompt.vision_inputs["pixel_values"])
    assert torch.equal(example["input_ids"][:, : prompt.length], prompt.input_ids)


# ------------------------------------------------------------------ the gym


def _centroid(img: np.ndarray, color: str) -> np.ndarray:
    mask = color_masks(img)[color]  # [H, W]
    ys, xs = np.nonzero(mask)
    assert len(ys) > 20, f"no {color} object in the image"
    return np.array([ys.mean(), xs.mean()])  # [2]


def test_progress_labels_match_the_object_in_the_rendered_state_images(push_gym: Path) -> None:
    rows = [r for r in load_jsonl(push_gym / "train.jsonl") if r.task == "push_progress"]
    assert rows and {r.meta["outcome"] for r in rows} == {"advance", "stall", "regress"}
    spec = GymSpec(**SPEC84)
    for row in rows:
        video = load_video(row.video, SAMPLING84)
        (initial,), (current,) = row_images(row, video, 28)
        color, step = row.meta["colors"]["object"], np.array(row.meta["direction"])
        d_len = row.meta["path_px"]
        assert d_len == path_length(spec, row.meta["object_boxes"][0][2]) and d_len % GRID == 0
        moved = (_centroid(current, color) - _centroid(initial, color)) * step  # [2] px along the path per axis
        seen = moved[step != 0].mean() / d_len
        gold = float(row.answer)
        assert abs(seen - gold) < 0.02, (row.id, seen, gold)  # a progress step is 0.05 (2 px at 84 x 84)
        assert row.meta["progress"][-1] == gold and row.problem_type == "progress" and row.images[1].frame == -1


def test_failure_labels_match_where_the_object_ends(push_gym: Path) -> None:
    rows = [r for r in load_jsonl(push_gym / "train.jsonl") if r.task == "push_failure"]
    assert {r.answer for r in rows} == {"A", "B"} and all(r.options == ["yes", "no"] for r in rows)
    for row in rows:
        video = load_video(row.video, SAMPLING84)
        _, (current,) = row_images(row, video, 28)
        obj = color_masks(current)[row.meta["colors"]["object"]]  # [H, W]
        gy, gx, gs = row.meta["goal_box"]
        inside = obj[gy + 2 : gy + gs - 2, gx + 2 : gx + gs - 2].sum() >= 0.9 * obj.sum() > 0  # within the outline
        goal = color_masks(current)[row.meta["colors"]["goal"]]  # [H, W]
        assert goal[gy : gy + gs, gx : gx + gs].sum() > 0.5 * goal.sum() > 0  # the outline is where meta says
        assert inside == (row.answer == "A") == row.meta["success"], row.id
        assert row.meta["failure_detection"] is True and (row.meta["outcome"] == "success") == row.meta["success"]


def test_chance_levels_are_hand_computed_and_in_gym_json(push_gym: Path) -> None:
    info = json.loads((push_gym / "gym.json").read_text())
    golds = [k / 20 for k in range(21)]
    const = sum(abs(0.5 - g) for g in golds) / 21  # = 5.5 / 21
    uniform = sum((g * g + (1 - g) ** 2) / 2 for g in golds) / 21  # E|U - g| for U ~ [0, 1]
    assert const == pytest.approx(5.5 / 21) and uniform == pytest.approx(5740 / 16800)
    assert info["chance_progress_mae"]["push_progress"] == {"constant_0.5": pytest.approx(const),
                                                          "uniform": pytest.approx(uniform)}
    assert info["chance_accuracy"] == {"push_progress": pytest.approx(1 - uniform), "push_failure": 0.5}
    other = GymSpec(families=["count"])
    from reelrl.gym.generate import manifest

    assert "chance_progress_mae" not in manifest(other, {"train": 1})  # other gyms' manifests are unchanged


# ------------------------------------------------------------------ eval


def test_eval_reports_progress_mae_and_failure_accuracy_hand_computed() -> None:
    from reelrl.eval.runner import score_samples
    from reelrl.pipeline import critic_columns

    def prow(i: int, gold: str) -> VideoRow:
        return VideoRow(id=f"p{i}", video="v.mp4", question="q", answer=gold, problem_type="progress",
                        task="push_progress")

    def frow(i: int, gold: str) -> VideoRow:
        return VideoRow(id=f"f{i}", video="v.mp4", question="q", answer=gold, problem_type="multiple_choice",
                        options=["yes", "no"], task="push_failure", meta={"failure_detection": True})

    samples = [(prow(0, "0.5"), "<think>a</think><answer>0.7</answer>", 5),  # |0.7 - 0.5| = 0.2
               (prow(1, "0.2"), "<answer>about 0.2</answer>", 5),  # unparseable: the whole range, 1
               (prow(2, "1"), "<answer>1.0</answer>", 5),  # 0
               (prow(3, "0"), "no tags 0", 5),  # unparseable: 1
               (frow(0, "A"), "<answer>A</answer>", 5), (frow(1, "B"), "<answer>A</answer>", 5)]
    result, _ = score_samples(samples, [RewardSpec("progress", 1.0), RewardSpec("format", 0.5)])
    p = result["per_task"]["push_progress"]["progress"]
    assert p["n"] == 4 and p["mae"] == pytest.approx(2.2 / 4) and p["mae_parsed"] == pytest.approx(0.1)
    assert p["parsed"] == 0.5 and p["range"] == [0.0, 1.0]
    assert result["per_task"]["push_progress"]["accuracy"] == pytest.approx(1 - 2.2 / 4)  # MAE = 1 - accuracy
    assert result["per_task"]["push_failure"]["failure_detection"] == {"n": 2, "accuracy": 0.5}
    assert "progress" not in result["per_task"]["push_failure"]
    assert critic_columns(result) == {"progress_mae": {"push_progress": pytest.approx(0.55)},
                                      "failure_accuracy": {"push_failure": 0.5}}


# ------------------------------------------------------------------ the recipe


def test_primo_r1_recipe_runs_sft_eval_rl_eval(tiny_model_dir: Path, tmp_path: Path) -> None:
    from reelrl.pipeline import Pipeline, load_recipe

    gym = tmp_path / "gym"
    generate_gym(gym, GymSpec(families=["push_progress", "push_failure"], height=56, width=56, difficulty=0.3),
                 6, 0, 4, progress=False)
    cfg = load_recipe("primo_r1", [
        f"output_dir={tmp_path / 'run'}", f"model.path={tiny_model_dir}", "data.gym.enabled=false",
        f"data.train={gym / 'train.jsonl'}", f"data.test={gym / 'test.jsonl'}", "video.min_pixels=3136",
        "video.max_pixels=3136", "sft.epochs=1", "sft.batch_size=3", "sft.micro_batch_size=3", "rl.steps=1",
        "rl.prompts_per_step=2", "rl.group_size=2", "rl.max_new_tokens=8", "eval.max_new_tokens=8",
        "logging.progress=false", "checkpoint.every=0"])
    assert [r.name for r in cfg.rl.rewards] == ["accuracy", "format", "progress"]
    assert cfg.stages == ["sft", "eval", "rl", "eval"]
    summary = Pipeline(cfg).run()
    ev = json.loads((tmp_path / "run" / "3-eval" / "eval.json").read_text())
    assert ev["n"] == 4 and {"n", "mae", "mae_parsed", "parsed"} <= set(ev["per_task"]["push_progress"]["progress"])
    assert ev["per_task"]["push_failure"]["failure_detection"]["n"] == 2
    assert {"push_progress"} == set(summary["rows"][-1]["progress_mae"])
    assert {"push_failure"} == set(summary["rows"][-1]["failure_accuracy"])
    m = json.loads((tmp_path / "run" / "2-rl" / "metrics.jsonl").read_text().splitlines()[0])
    assert "reward/progress/mean" in m and "reward/accuracy/mean" in m
    assert "MAE" in (tmp_path / "run" / "summary.md").read_text()
