"""Object-ID spatio-temporal grounding (STVG-R1): rendered IDs, the id_grounding family, the stvg reward,
answer parsing, evaluation metrics, the HC-STVG importer and draw-ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from reelrl.cli import app
from reelrl.data.hc_stvg import convert_hc_stvg, read_hc_stvg
from reelrl.data.schema import DataError, VideoRow, load_jsonl
from reelrl.data.target_ids import format_target, parse_target
from reelrl.eval.runner import score_samples
from reelrl.gym import GymSpec, chance_accuracy, generate_gym, make_sample
from reelrl.gym.generate import ENCODER
from reelrl.gym.grounding import _random_guess_iou
from reelrl.gym.id_grounding import BEHAVIOURS, id_chance, label_cell, n_objects, object_box
from reelrl.gym.render import PALETTE
from reelrl.gym.tasks import secs
from reelrl.rewards import REWARDS, RewardSpec, score_answer
from reelrl.video.decode import decode_frames, write_video
from reelrl.video.glyphs import DIGITS, LABEL_BG, LABEL_FG, draw_label, label_box, read_label

FIXTURES = Path(__file__).parent / "fixtures"
GOLD = "Target ID: 3, Time range: 1 to 3"


def _labels(sample) -> list[tuple[int, tuple[int, int, int, int], str, int]]:
    """(frame, label box, ID, scale) of every visible object of an id_grounding sample."""
    H, W = sample.frames.shape[1:3]
    out = []
    for t in range(sample.frames.shape[0]):
        for obj in sample.meta["objects"]:
            box = object_box(obj, t)
            if box is not None:
                gy, gx = label_cell(box, H, W)
                sc = sample.meta["label_scale"]
                out.append((t, label_box(str(obj["id"]), gy + 7, gx + 7, H, W, sc), str(obj["id"]), sc))
    return out


# ------------------------------------------------------------------ glyphs


@pytest.mark.parametrize("side", [56, 84])
def test_rendered_ids_are_readable_after_h264_at_the_gym_resolution(side: int, tmp_path: Path) -> None:
    spec = GymSpec(families=["id_grounding"], height=side, width=side, difficulty=1.0)  # 4 objects, smallest
    n_read = 0
    for i in range(3):
        _, sample = make_sample(spec, "train", i)
        labels = _labels(sample)
        for t, (y, x, h, w), *_ in labels:  # exact colours before encoding: white patch, black ink
            region = sample.frames[t, y - 1 : y - 1 + 14, x - 3 : x - 3 + 14]  # [14, 14, 3] the whole patch
            assert y - 1 == (y - 1) // 14 * 14 and x - 3 == (x - 3) // 14 * 14  # on the patch grid
            assert set(map(tuple, region.reshape(-1, 3))) == {LABEL_BG, LABEL_FG}
        path = write_video(tmp_path / f"{i}.mp4", sample.frames, sample.fps, **ENCODER)
        decoded = decode_frames(path, np.arange(sample.frames.shape[0]))  # [T, H, W, 3]
        for t, box, text, sc in labels:
            assert read_label(decoded[t], box, len(text), sc) == text, (i, t, text)
            n_read += 1
    assert n_read > 20


def test_every_digit_reads_back_as_itself_and_background_reads_as_nothing(tmp_path: Path) -> None:
    frames = np.full((2, 56, 84, 3), 12, dtype=np.uint8)  # [T, H, W, 3]
    boxes = [draw_label(frames[0], d, 14 + 28 * (k // 5), 8 + 16 * (k % 5)) for k, d in enumerate(DIGITS)]
    box2 = draw_label(frames[1], "47", 28, 42)
    decoded = decode_frames(write_video(tmp_path / "d.mp4", frames, 4.0, **ENCODER), [0, 1])  # [2, H, W, 3]
    assert [read_label(decoded[0], b, 1) for b in boxes] == list(DIGITS)
    assert read_label(decoded[1], box2, 2) == "47"
    assert read_label(decoded[1], boxes[0], 1) is None  # a region without a label


# ------------------------------------------------------------------ the family


@pytest.mark.parametrize("d", [0.0, 0.5, 1.0])
def test_family_answers_agree_with_meta_and_pixels(d: float) -> None:
    spec = GymSpec(families=["id_grounding"], difficulty=d, frames=16, fps=4.0)
    for i in range(6):
        _, s = make_sample(spec, "val", i)
        objs = s.meta["objects"]
        assert len(objs) == n_objects(d) == {0.0: 2, 0.5: 3, 1.0: 4}[d]
        assert len({o["id"] for o in objs}) == len(objs) and all(1 <= o["id"] <= 9 for o in objs)
        assert len({o["behaviour"] for o in objs}) == len(objs)  # the behaviour finds exactly one object
        tgt = objs[s.meta["target"]]
        assert f"Which object {BEHAVIOURS[tgt['behaviour']]}?" in s.question
        assert str(tgt["id"]) not in s.question
        start, end = secs(tgt["start"], s.fps), secs(tgt["start"] + tgt["length"], s.fps)
        assert parse_target(s.answer) == (tgt["id"], (start, end)) and s.time_span == (start, end)
        VideoRow(id="r", video="v.mp4", question=s.question, answer=s.answer, problem_type=s.problem_type,
                 time_span=s.time_span)
        for o in objs:
            (y0, x0, _), (y1, x1, _) = o["start_box"], o["end_box"]
            moved = {"left": x1 < x0 and y1 == y0, "right": x1 > x0 and y1 == y0, "up": y1 < y0 and x1 == x0,
                     "down": y1 > y0 and x1 == x0, "still": (y0, x0) == (y1, x1)}
            assert moved[o["behaviour"]], o
            colour = np.asarray(PALETTE[o["color"]], dtype=np.uint8)
            for t in range(s.frames.shape[0]):
                box = object_box(o, t)
                y, x, side = box if box is not None else o["start_box"]
                cell = s.frames[t, y : y + side, x : x + side]  # [side, side, 3]
                shown = bool((cell == colour).all(axis=-1).any())
                assert shown == (box is not None), (o, t)


def test_chance_is_random_shown_id_times_random_span_and_lands_in_gym_json(tmp_path: Path) -> None:
    spec = GymSpec(families=["id_grounding"], difficulty=0.5, difficulty_jitter=0.5, frames=16)
    # hand: n = 2, 3, 4 on thirds of the jitter interval [0, 1]
    assert id_chance(spec) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3, abs=1e-3)
    # empirical: mean over samples of (1/n) * exact mean IoU of every span against the target window
    vals = []
    for i in range(400):
        _, s = make_sample(spec, "train", i)
        tgt = s.meta["objects"][s.meta["target"]]
        vals.append(_random_guess_iou(16, tgt["length"], tgt["start"]) / len(s.meta["objects"]))
    assert np.mean(vals) == pytest.approx(chance_accuracy("id_grounding", spec), abs=0.006)
    info = generate_gym(tmp_path, spec, 2, 0, 0, progress=False)
    assert info["chance_accuracy"]["id_grounding"] == chance_accuracy("id_grounding", spec)
    assert info["chance_id_accuracy"] == {"id_grounding": id_chance(spec)}  # the ID column's chance
    rows = load_jsonl(tmp_path / "train.jsonl")
    assert [r.problem_type for r in rows] == ["spatio_temporal_grounding"] * 2


# ------------------------------------------------------------------ reward and parsing


def _wrap(answer: str) -> str:
    return f"<think>t</think><answer>{answer}</answer>"


def test_stvg_reward_on_hand_computed_cases() -> None:
    cases = {  # completion -> tIoU + 1[ID] + format against gold ID 3, 1 to 3
        _wrap("Target ID: 3, Time range: 1 to 3"): 3.0,
        _wrap("Target ID: 3, Time range: 4 to 6"): 2.0,  # right ID, wrong time
        _wrap("Target ID: 5, Time range: 2 to 3"): 1.5,  # wrong ID, tIoU 1/2
        _wrap("Target ID: 3, Time range: 2 to 4"): 1 / 3 + 2,  # inter 1, union 3
        _wrap("Target ID: 3, Time range: 3 to 1"): 2.0,  # reversed range: tIoU 0
        "<answer>Target ID: 3, Time range: 1 to 3</answer>": 2.0,  # no think: no format
        _wrap("Time range: 1.0 to 3.0 seconds, Target ID: [3]"): 3.0,
        _wrap("Target ID: 3"): 1.0,  # one part missing: both 0 (as STVG-R1)
        "Target ID: 3, Time range: 1 to 3": 0.0,  # no tags
    }
    out = REWARDS.get("stvg")(list(cases), answer=[GOLD] * len(cases))
    assert out == pytest.approx(list(cases.values()))
    only_id = REWARDS.get("stvg")(list(cases)[:3], answer=[GOLD] * 3, w_time=0.0, w_format=0.0)
    assert only_id == [1.0, 1.0, 0.0]
    acc = [score_answer("spatio_temporal_grounding", a, GOLD) for a in
           ("Target ID: 3, Time range: 2 to 4", "Target ID: 5, Time range: 1 to 3")]
    assert acc == pytest.approx([1 / 3, 0.0])  # the vIoU: tIoU only when the ID is right


MALFORMED = [
    "Target ID: 3a, Time range: 1 to 3", "Target ID: 3.5, Time range: 1 to 3", "Target ID: -3, Time range: 1 to 3",
    "Target ID: 3, Time range: 1.5.3 to 3", "Target ID: 3, Time range: 1 to 2 to 3", "Target ID: 3, Time range: -1 to 3",
    "Target ID: 3, Time range: 1:75 to 3", "Target ID: 3, Time range: 1 to 3e5", "Target ID: 3, Time range: 1 to inf",
    "Target ID: 3, Target ID: 4, Time range: 1 to 3", "Target ID: 3, Time range: 1 to 3, Time range: 1 to 3",
    "Target ID: \u0663, Time range: 1 to 3", "Target \u0131D: 3, Time range: 1 to 3", "Target ID: 3, Time range: 1 to",
    "ID 3 from 1 to 3", "Target ID: three, Time range: 1 to 3", "",
]


@pytest.mark.parametrize("answer", MALFORMED)
def test_malformed_answers_are_refused_and_score_zero(answer: str) -> None:
    assert parse_target(answer) is None
    assert REWARDS.get("stvg")([_wrap(answer)], answer=[GOLD], w_format=0.0) == [0.0]
    assert score_answer("spatio_temporal_grounding", answer, GOLD) == 0.0


def test_well_formed_variants_parse_and_gold_answers_are_validated() -> None:
    assert parse_target("target id: [12] time range: [0:05 - 0:10]") == (12, (5.0, 10.0))
    assert parse_target("Time range: 2 and 3.5 seconds. Target ID: 7.") == (7, (2.0, 3.5))
    assert parse_target(format_target(4, 0.25, 1.5)) == (4, (0.25, 1.5))
    for bad in ("Target ID: 3, Time range: 3 to 1", "Target ID: 3", "Time range: 1 to 2", "Target ID: 3, Time range: 2 to 2"):
        with pytest.raises(ValidationError, match="spatio_temporal_grounding"):
            VideoRow(id="r", video="v.mp4", question="q", answer=bad, problem_type="spatio_temporal_grounding")


def test_eval_reports_miou_recall_id_accuracy_and_viou() -> None:
    rows = [VideoRow(id=f"r{i}", video="v.mp4", question="q", answer=GOLD, problem_type="spatio_temporal_grounding",
                     task="id_grounding") for i in range(4)]
    texts = [_wrap("Target ID: 3, Time range: 1 to 3"),   # tIoU 1, ID right
             _wrap("Target ID: 4, Time range: 1 to 3"),   # tIoU 1, ID wrong
             _wrap("Target ID: 3, Time range: 2 to 4"),   # tIoU 1/3, ID right
             _wrap("Target ID: 3")]                        # unparsable: 0, 0
    result, _ = score_samples([(r, t, 10) for r, t in zip(rows, texts)], [RewardSpec("stvg")])
    g = result["per_task"]["id_grounding"]["grounding"]
    assert g["mIoU"] == pytest.approx((1 + 1 + 1 / 3) / 4)
    assert (g["R@0.3"], g["R@0.5"], g["R@0.7"]) == (0.75, 0.5, 0.5)
    assert g["id_accuracy"] == 0.5
    assert g["m_vIoU"] == pytest.approx((1 + 1 / 3) / 4) == result["accuracy"]
    assert (g["vIoU@0.3"], g["vIoU@0.5"]) == (0.5, 0.25)  # strict > as HC-STVG's eval_hcvg.py
    assert result["mean_reward"] == pytest.approx((3 + 2 + (1 / 3 + 2) + 1) / 4)


# ------------------------------------------------------------------ HC-STVG and draw-ids


def _grey_video(path: Path, n: int = 12, h: int = 64, w: int = 96) -> Path:
    frames = np.full((n, h, w, 3), 100, dtype=np.uint8)  # [T, H, W, 3]
    return write_video(path, frames, 4.0)


def _centre(box_xywh: list[float]) -> tuple[float, float]:
    x, y, w, h = box_xywh
    return y + h / 2, x + w / 2


def test_hc_stvg_importer_draws_target_and_extra_ids_in_the_published_schema(tmp_path: Path) -> None:
    videos = tmp_path / "videos_src"
    _grey_video(videos / "55_vfjywN5CN0Y.mp4")
    _grey_video(videos / "14_wfEOx36N4jA.mp4")
    _grey_video(videos / "0" / "3_5MxjqHfkWFI.mkv")  # v2's video_parts/<k>/ layout
    out = tmp_path / "out" / "rows.jsonl"
    counts = convert_hc_stvg(FIXTURES / "hc_stvg_v1_sample.json", videos, out,
                             tracks=FIXTURES / "hc_stvg_tracks_sample.json")
    assert counts == {"rows": 2, "extra_tracks": 1, "labels": 5 + 7 + 3, "outside": 0}
    rows = {r.id: r for r in load_jsonl(out)}
    ann = json.loads((FIXTURES / "hc_stvg_v1_sample.json").read_text())
    extra = json.loads((FIXTURES / "hc_stvg_tracks_sample.json").read_text())["55_vfjywN5CN0Y.mp4"][0]
    r = rows["55_vfjywN5CN0Y"]
    target, span = parse_target(r.answer)
    assert span == (0.75, 2.0) == r.time_span and r.problem_type == "spatio_temporal_grounding"
    assert sorted(r.meta["ids"]) == [1, 2] and target == r.meta["target_id"] == r.meta["ids"][0]
    assert "pours the contents of the bag into his hand\"" in r.question  # final period removed
    assert r.meta["event"] == "the man in brown clothes pours the contents of the bag into his hand"  # STVG-R1's
    frames = decode_frames(r.video, np.arange(12))  # [T, H, W, 3]
    other = r.meta["ids"][1]
    for t in range(12):
        j = t - (ann["55_vfjywN5CN0Y.mp4"]["st_frame"] - 1)
        if 0 <= j < len(ann["55_vfjywN5CN0Y.mp4"]["bbox"]):
            box = label_box(str(target), *_centre(ann["55_vfjywN5CN0Y.mp4"]["bbox"][j]), 64, 96)
            assert read_label(frames[t], box, 1) == str(target), t
        else:
            box = label_box(str(target), *_centre(ann["55_vfjywN5CN0Y.mp4"]["bbox"][0]), 64, 96)
            assert read_label(frames[t], box, 1) is None, t
        b = extra["bbox"][t] if t < len(extra["bbox"]) else None
        if b is not None:
            assert read_label(frames[t], label_box(str(other), *_centre(b), 64, 96), 1) == str(other), t
    # v2 layout: English + img_size, video found in a sub-folder; one track: ID 1
    out2 = tmp_path / "out2" / "rows.jsonl"
    assert convert_hc_stvg(FIXTURES / "hc_stvg_v2_sample.json", videos, out2)["rows"] == 1
    (r2,) = load_jsonl(out2)
    assert r2.answer == "Target ID: 1, Time range: 1.25 to 2.25" and r2.meta["height"] == 64


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("st_time"), "field st_time must be a finite number"),
    (lambda r: r.update(ed_time=0.5, st_time=0.9), "not 0 <= st_time < ed_time"),
    (lambda r: r.update(bbox=[[1, 2, 3]]), r"bbox\[0\] must be four finite numbers"),
    (lambda r: r.update(bbox=[[1, 2, 0, 4]]), r"bbox\[0\] .* has no area"),
    (lambda r: r.update(st_frame=0), "field st_frame must be an integer >= 1"),
    (lambda r: r.update(caption=" "), "needs a non-empty sentence"),
    (lambda r: r.update(ed_frame=99), "ed_frame 99 is not the last box's frame"),
    (lambda r: r.pop("width"), "field width must be an integer"),
])
def test_malformed_hc_stvg_records_name_file_and_record(tmp_path: Path, edit, message: str) -> None:
    data = json.loads((FIXTURES / "hc_stvg_v1_sample.json").read_text())
    edit(data["14_wfEOx36N4jA.mp4"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"bad\.json: record '14_wfEOx36N4jA\.mp4': .*{message}"):
        read_hc_stvg(bad)


def test_missing_video_names_the_record(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"record '55_vfjywN5CN0Y\.mp4': video 55_vfjywN5CN0Y\.mp4 not found"):
        convert_hc_stvg(FIXTURES / "hc_stvg_v1_sample.json", tmp_path, tmp_path / "rows.jsonl")


def test_draw_ids_command_on_a_real_encoded_video(tmp_path: Path) -> None:
    from tests.videos_for_tests import blocks

    src = write_video(tmp_path / "src.mp4", blocks(8, 64, 96, seed=3), 8.0)
    tracks = [{"id": 7, "start_frame": 2, "boxes": [[10, 10, 40, 40], [12, 10, 42, 40], None, [16, 10, 46, 40]]},
              {"id": 25, "start_frame": 0, "boxes": [[60, 30, 90, 60]] * 8}]
    (tmp_path / "tracks.json").write_text(json.dumps(tracks))
    res = CliRunner().invoke(app, ["draw-ids", str(src), str(tmp_path / "tracks.json"), str(tmp_path / "out.mp4")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["labels"] == 3 + 8
    before = decode_frames(src, np.arange(8))  # [8, H, W, 3]
    after = decode_frames(tmp_path / "out.mp4", np.arange(8))  # [8, H, W, 3]
    for t in range(8):
        b = tracks[0]["boxes"][t - 2] if 2 <= t < 6 else None
        box7 = label_box("7", (b[1] + b[3]) / 2, (b[0] + b[2]) / 2, 64, 96) if b else None
        if box7:
            assert read_label(after[t], box7, 1) == "7", t
        assert read_label(after[t], label_box("25", 45, 75, 64, 96), 2) == "25", t
        # away from the labels the picture is the source's (H.264 re-encoding noise only)
        diff = np.abs(after[t, 40:, :40].astype(int) - before[t, 40:, :40].astype(int)).mean()
        assert diff < 6, (t, diff)
    (tmp_path / "bad.json").write_text(json.dumps([{"id": 7, "start_frame": 0, "boxes": [[5, 5, 1, 9]]}]))
    res = CliRunner().invoke(app, ["draw-ids", str(src), str(tmp_path / "bad.json"), str(tmp_path / "o2.mp4")])
    said = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2 and "bad.json: track 0 box 0" in said and "x2 < x1" in said, res.output
    assert not (tmp_path / "o2.mp4").exists()


# ------------------------------------------------------------------ the recipe


def test_stvg_r1_recipe_runs_sft_eval_rl_eval(tiny_model_dir, tmp_path: Path) -> None:
    from reelrl.pipeline import Pipeline, load_recipe

    gym = tmp_path / "gym"
    cfg = load_recipe("stvg_r1", [
        f"output_dir={tmp_path / 'run'}", f"model.path={tiny_model_dir}", f"data.gym.dir={gym}",
        "data.gym.spec.height=56", "data.gym.spec.width=56", "data.gym.n_train=6", "data.gym.n_val=0",
        "data.gym.n_test=4", "video.min_pixels=3136",
        "video.max_pixels=3136", "sft.epochs=1", "sft.batch_size=3", "sft.micro_batch_size=3", "rl.steps=1",
        "rl.prompts_per_step=2", "rl.group_size=2", "rl.max_new_tokens=8", "eval.max_new_tokens=8",
        "logging.progress=false", "checkpoint.every=0"])
    assert [r.name for r in cfg.rl.rewards] == ["stvg", "accuracy"] and cfg.stages == ["sft", "eval", "rl", "eval"]
    Pipeline(cfg).run()
    ev = json.loads((tmp_path / "run" / "3-eval" / "eval.json").read_text())
    g = ev["per_task"]["id_grounding"]["grounding"]
    assert ev["n"] == 4 and {"mIoU", "R@0.5", "id_accuracy", "m_vIoU", "vIoU@0.5"} <= set(g)
    m = json.loads((tmp_path / "run" / "2-rl" / "metrics.jsonl").read_text().splitlines()[0])
    assert "reward/stvg/mean" in m
    # the summary carries the ID accuracy and span mIoU (its accuracy is the m_vIoU), chance from gym.json
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    chance, sft, grpo = summary["rows"]
    assert chance["id_accuracy"] == {"id_grounding": json.loads((gym / "gym.json").read_text())["chance_id_accuracy"][
        "id_grounding"]} and "mIoU" not in chance
    assert grpo["id_accuracy"] == {"id_grounding": g["id_accuracy"]} and grpo["mIoU"] == {"id_grounding": g["mIoU"]}
    assert grpo["accuracy"] == ev["accuracy"] and sft["model"] == "SFT"
    header = (tmp_path / "run" / "summary.md").read_text().splitlines()[0]
    assert "| id_grounding ID acc. | id_grounding mIoU |" in header


PUBLISHED_STVG_R1 = """Each object in the video is marked with a red number at its center, representing its object ID. To accurately pinpoint the event "[EVENT]" in the video:

1.Determine the precise time period of the event occurs.

2.Identify which object ID is corresponding to the described event.

Output your thought process within the <think> </think> tags, including both a temporal analysis (e.g., specific timestamps "xx.xx" or time ranges "xx.xx to xx.xx") and a spatial analysis (e.g., object ID "xx").

Then, provide the start and end times (in seconds, precise to two decimal places), and object ID in the format "Target ID: [ID], Time range: [start time to end time]" within the <answer> </answer> tags. For example: "Target ID: 1, Time range: 12.54 to 17.83"."""


def test_stvg_r1_template_is_the_published_question_template_with_the_event() -> None:
    from reelrl.data.templates import STAGES, get_template

    tpl = get_template("stvg_r1")
    row = VideoRow(id="r", video="v.mp4", question="q", answer=GOLD, problem_type="spatio_temporal_grounding",
                   meta={"event": "the man in blue clothes stands up"})
    for stage in STAGES:
        assert tpl.user_text(row, stage) == PUBLISHED_STVG_R1.replace("[EVENT]", "the man in blue clothes stands up")
        assert tpl.system_text(stage) is None
    with pytest.raises(DataError, match="row r2: prompt template 'stvg_r1' needs the event sentence"):
        tpl.user_text(row.model_copy(update={"id": "r2", "meta": {}}), "rl")
    _, s = make_sample(GymSpec(families=["id_grounding"]), "train", 0)
    tgt = s.meta["objects"][s.meta["target"]]
    assert s.meta["event"] == f"the object {BEHAVIOURS[tgt['behaviour']]}"
