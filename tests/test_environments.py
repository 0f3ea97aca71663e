"""Gym environments (visual styles), SEED-Bench-R1's generalisation levels, and its importer."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from reelrl.config import ConfigError, RecipeConfig
from reelrl.data.schema import DataError, load_jsonl
from reelrl.data.seed_bench_r1 import level_of, read_seed_bench_r1
from reelrl.gym import GymSpec, generate_gym, make_sample
from reelrl.gym.environments import ENVIRONMENTS, PALETTES, TEXTURES, diamond_mask, triangle_mask
from reelrl.gym.generate import manifest, sample_row
from reelrl.gym.render import BACKGROUND, PALETTE
from reelrl.video.decode import decode_frames, write_video
from tests.gym_pixels import nearest_color

FIXTURES = Path(__file__).parent / "fixtures" / "seed_bench_r1"
STYLED = [n for n in ENVIRONMENTS.names() if n != "default"]
SMALL = dict(families=["count", "order", "direction", "color_change"], frames=16, height=56, width=56, seed=3)


# ---------------------------------------------------------------- the default look is unchanged


def _digest(spec: GymSpec) -> str:
    h = hashlib.sha256()
    for split in ("train", "test"):
        for i in range(4):
            fam, s = make_sample(spec, split, i)
            h.update(s.frames.tobytes())
            h.update(sample_row(spec, split, i, fam, s, "v.mp4").model_dump_json().encode())
    h.update(json.dumps(manifest(spec, {"train": 4, "val": 0, "test": 4}), sort_keys=True).encode())
    return h.hexdigest()


GOLDEN = "0185b11c91ba6a84331d6857b4c6949e05990e84c4214c37533bb951c368257e"
"""sha256 of :func:`_digest` as the generator computed it before GymSpec had ``environment``."""


def test_default_environment_renders_as_before_the_field_existed() -> None:
    spec = GymSpec(**SMALL)
    assert _digest(spec) == _digest(GymSpec(**SMALL, environment="default")) == GOLDEN
    assert "environment" not in manifest(spec, {"train": 1})["spec"]  # old gym.json files still match
    assert manifest(GymSpec(**SMALL, environment="slate_deep"), {"train": 1})["spec"]["environment"] == "slate_deep"


def test_default_environment_gym_is_byte_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate_gym(a, GymSpec(**SMALL), 2, 0, 2, progress=False)
    generate_gym(b, GymSpec(**SMALL, environment="default"), 2, 0, 2, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and len(files) == 7
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


# ---------------------------------------------------------------- pixels


def _pair(env: str, family: str, index: int = 0):
    spec = dict(SMALL, families=[family])
    base = make_sample(GymSpec(**spec), "test", index)[1]
    return base, make_sample(GymSpec(**spec, environment=env), "test", index)[1]


def test_backgrounds_replace_exactly_the_background_pixels() -> None:
    base, slate = _pair("slate_deep", "color_change")
    bg = np.all(base.frames == BACKGROUND, axis=-1)  # [T, H, W]
    assert (slate.frames[bg] == (46, 50, 60)).all()
    assert slate.question == base.question and slate.answer == base.answer and slate.options == base.options
    # object pixels keep their place; each becomes its colour's deep shade
    deep = PALETTES.get("deep")()
    for name, rgb in PALETTE.items():
        m = np.all(base.frames == rgb, axis=-1)  # [T, H, W]
        assert (slate.frames[m] == deep[name]).all()
    gbase, grad = _pair("gradient_soft", "order")
    gbg = np.all(gbase.frames == BACKGROUND, axis=-1)  # [T, H, W]
    top = grad.frames[:, 0][gbg[:, 0]]  # [n, 3] background pixels of the first row
    bottom = grad.frames[:, -1][gbg[:, -1]]  # [n, 3]
    assert (top == (10, 12, 34)).all() and (bottom == (46, 46, 56)).all()
    noise = ENVIRONMENTS.get("noise_shapes").restyle(np.full((3, 56, 56, 3), BACKGROUND, np.uint8),
                                                    np.random.default_rng(1))  # [T, H, W, 3]
    vals = noise.reshape(-1, 3)  # [T*H*W, 3]
    assert (vals[:, 0] == vals[:, 1]).all() and vals.min() >= 10 and vals.max() <= 70 and len(np.unique(vals)) > 30
    assert (noise == noise[0]).all()  # static: the noise does not flicker
    stripes = ENVIRONMENTS.get("stripes_checker").restyle(np.full((1, 56, 56, 3), BACKGROUND, np.uint8),
                                                          np.random.default_rng(1))[0]  # [H, W, 3]
    assert (stripes[0, :4] == (18, 18, 22)).all() and (stripes[0, 4:8] == (58, 58, 64)).all()
    assert (stripes[1, 3] == (58, 58, 64)).all()  # diagonal: (y + x) // 4 alternates


def test_textures_modulate_object_brightness() -> None:
    base, styled = _pair("stripes_checker", "color_change")
    name = base.meta["from"]
    y, x, s = base.meta["box"]
    obj = styled.frames[0, y : y + s, x : x + s].astype(float)  # [s, s, 3]
    full = np.asarray(PALETTE[name], dtype=float)
    gains = np.round(obj[..., np.argmax(full)] / full.max(), 2)  # [s, s]
    assert set(np.unique(gains)) <= {0.85, 1.0} and len(np.unique(gains)) == 2
    assert all(gains[i, j] == (0.85 if ((y + i) // 4 + (x + j) // 4) % 2 else 1.0)
               for i in range(s) for j in range(s))


def test_shape_sets_redraw_in_the_same_box_and_rename_the_words() -> None:
    base, styled = _pair("noise_shapes", "count")
    assert base.question == "How many times does the square flash?"
    assert styled.question == "How many times does the diamond flash?"
    y, x, s = base.meta["box"]
    t = base.meta["starts"][0]
    on = np.all(styled.frames[t, y : y + s, x : x + s] == PALETTE[base.meta["color"]], axis=-1)  # [s, s]
    assert (on == diamond_mask(s)).all() and not on[0, 0] and on[s // 2, s // 2]
    dbase, dstyled = _pair("noise_shapes", "direction")
    assert dstyled.question == dbase.question.replace("ball", "triangle") and "ball" not in dstyled.reasoning
    assert dstyled.answer == dbase.answer
    y, x, s = dbase.meta["start"]
    on = np.all(dstyled.frames[0, y : y + s, x : x + s] == PALETTE[dbase.meta["color"]], axis=-1)  # [s, s]
    assert (on == triangle_mask(s)).all()
    assert triangle_mask(9)[0].sum() == 1 and triangle_mask(9)[-1].all()  # apex on top, base at the bottom


@pytest.mark.parametrize("env", ENVIRONMENTS.names())
def test_colour_names_stay_true_in_every_environment(env: str, tmp_path: Path) -> None:
    """Every shade, at the texture's darkest and brightest gain, is nearest its own name; also after H.264."""
    e = ENVIRONMENTS.get(env)
    shades = PALETTES.get(e.palette)()
    gain = TEXTURES.get(e.texture)(np.random.default_rng(0), 56, 56)  # [H, W]
    for name in PALETTE:
        for g in (gain.min(), gain.max()):
            assert nearest_color(np.asarray(shades[name]) * g) == name, (env, name, g)
    frames = np.full((2, 84, 84, 3), BACKGROUND, dtype=np.uint8)  # [T, H, W, 3]
    boxes = {}
    for i, (name, rgb) in enumerate(PALETTE.items()):
        y, x = 8 + 36 * (i // 4), 6 + 20 * (i % 4)
        frames[:, y : y + 12, x : x + 12] = rgb
        boxes[name] = (y, x)
    styled = e.restyle(frames, np.random.default_rng(0))  # [T, H, W, 3]
    dec = decode_frames(write_video(tmp_path / "p.mp4", styled, 4.0), [0, 1])  # [2, H, W, 3]
    for name, (y, x) in boxes.items():
        assert nearest_color(dec[1, y + 2 : y + 10, x + 2 : x + 10].reshape(-1, 3).mean(axis=0)) == name, (env, name)


def test_same_scene_in_every_environment() -> None:
    for env in STYLED:
        base, styled = _pair(env, "order", 2)
        assert styled.answer == base.answer and styled.meta["onsets"] == base.meta["onsets"]
        assert styled.meta["environment"] == env and "environment" not in base.meta


# ---------------------------------------------------------------- config


def test_unknown_environment_is_a_clear_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ValidationError, match="unknown gym environment 'neon'; valid names: default, "):
        GymSpec(environment="neon")
    cfg = {"model": {"path": str(tiny_model_dir)}, "stages": ["eval"],
           "data": {"gym": {"enabled": True, "spec": dict(SMALL)}},
           "eval": {"levels": {"L1": {}, "L2": {"environment": "neon"}}}}
    with pytest.raises(ValueError, match=r"eval\.levels\.L2\.environment: unknown gym environment 'neon'"):
        RecipeConfig.model_validate(cfg)
    cfg["eval"]["levels"] = {"L3": {"families": ["nope"]}}
    with pytest.raises(ValueError, match=r"eval\.levels\.L3\.families: unknown gym task 'nope'"):
        RecipeConfig.model_validate(cfg)
    cfg["eval"]["levels"] = {"L1": {}}
    cfg["data"] = {"train": "t.jsonl", "test": "t.jsonl"}
    with pytest.raises(ValueError, match="eval.levels needs data.gym.enabled"):
        RecipeConfig.model_validate(cfg)


def test_packaged_recipe_levels_load() -> None:
    from reelrl.pipeline import load_recipe

    cfg = load_recipe("seed_bench_r1")
    assert cfg.stages == ["sft", "eval", "rl", "eval"] and list(cfg.eval.levels) == ["L1", "L2", "L3"]
    with pytest.raises(ConfigError, match=r"eval\.levels\.L2\.environment"):
        load_recipe("seed_bench_r1", ["eval.levels.L2.environment=neon"])


# ---------------------------------------------------------------- the three levels end to end


def test_pipeline_evaluates_three_levels(recipe_dict: dict, tmp_path: Path) -> None:
    from reelrl.pipeline import Pipeline

    gym_dir = tmp_path / "gym"
    recipe_dict["data"] = {"gym": {"enabled": True, "dir": str(gym_dir), "n_train": 4, "n_val": 0, "n_test": 3,
                                   "spec": dict(SMALL, families=["order", "color_change"],
                                                count_mode="multiple_choice")}}
    recipe_dict["stages"] = ["eval", "sft", "eval"]
    recipe_dict["sft"]["epochs"] = 1
    recipe_dict["eval"]["levels"] = {"L1": {}, "L2": {"environment": "noise_shapes"},
                                     "L3": {"environment": "noise_shapes", "families": ["count"]}}
    summary = Pipeline(RecipeConfig.model_validate(recipe_dict)).run()
    assert not (gym_dir / "levels" / "L1").exists()  # L1 is the gym's own test split
    l2, l3 = load_jsonl(gym_dir / "levels/L2/test.jsonl"), load_jsonl(gym_dir / "levels/L3/test.jsonl")
    l1 = load_jsonl(gym_dir / "test.jsonl")
    assert [r.answer for r in l2] == [r.answer for r in l1]  # the same scenes, restyled
    assert all(r.meta["environment"] == "noise_shapes" for r in l2 + l3) and {r.task for r in l3} == {"count"}
    assert not (gym_dir / "levels/L2/train.jsonl").exists()
    assert [r["model"] for r in summary["rows"]] == ["chance", "base", "SFT"]
    assert summary["levels"]["L3"]["chance"] == pytest.approx(0.25)  # count, multiple choice, 4 options
    assert summary["levels"]["L1"]["chance"] == pytest.approx(0.25) and summary["levels"]["L2"]["n"] == 3
    for row in summary["rows"][1:]:
        for level in ("L1", "L2", "L3"):
            assert 0.0 <= row["levels"][level]["accuracy"] <= 1.0
    run = Path(recipe_dict["output_dir"])
    on_disk = json.loads((run / "summary.json").read_text())
    for level in ("L1", "L2", "L3"):
        ev = json.loads((run / "2-eval" / level / "eval.json").read_text())
        assert on_disk["rows"][2]["levels"][level]["accuracy"] == ev["accuracy"] and ev["n"] == 3
    assert set(on_disk["rows"][2]["levels"]["L3"]["per_task"]) == {"count"}
    assert "| chance |" in (run / "summary.md").read_text()
    shutil.rmtree(run)


# ---------------------------------------------------------------- SEED-Bench-R1 importer


def test_import_validation_level() -> None:
    rows, counts = read_seed_bench_r1(FIXTURES / "validation_L2.jsonl", "/data/sbr1")
    assert counts == {"rows": 2, "no_video": 1}  # sample 116 has no task-progress video
    a, b = rows
    assert a.id == "L2-115" and a.task == "L2" and a.problem_type == "multiple_choice" and a.answer == "A"
    assert a.video == "/data/sbr1/videos/EpicKitchens/P01_13_115.mp4"
    assert a.options == ["put cereal box into cupboard", "take cereal bag", "open cupboard",
                         "put cereal bag into cereal box"]
    assert a.question.startswith("Considering the progress shown in the video") and a.question.endswith("cereal?")
    assert a.meta["current_observation"] == "/data/sbr1/images/EpicKitchens/P01_13_115.png"
    assert a.meta["task_progress"] == ["take cereal bag", "fold cereal bag", "open cupboard"]
    assert a.meta["level"] == "L2" and a.meta["task_goal"] == "store cereal"
    assert b.id == "L2-ego4d-7" and b.answer == "C" and b.options[2] == "take cup"


def test_import_training_file_draws_three_negatives_reproducibly() -> None:
    rows, counts = read_seed_bench_r1(FIXTURES / "training_6k.jsonl", "/data/sbr1")
    again, _ = read_seed_bench_r1(FIXTURES / "training_6k.jsonl", "/data/sbr1")
    assert counts == {"rows": 2, "no_video": 0} and [r.options for r in rows] == [r.options for r in again]
    negatives = {"open drawer", "grab knife", "close drawer", "slice onion", "remove peel from onion", "peel onion"}
    r = rows[0]
    assert r.task == "train" and len(r.options) == 4 and len(set(r.options)) == 4
    assert r.options["ABCD".index(r.answer)] == "grab onion" and set(r.options) - {"grab onion"} <= negatives
    assert sorted(rows[1].options) == sorted(["pour coffee", "take mug", "open fridge", "wash mug"])
    draws = {tuple(read_seed_bench_r1(FIXTURES / "training_6k.jsonl", "/data/sbr1", seed=s)[0][0].options)
             for s in range(6)}
    assert len(draws) > 1  # the seed chooses the negatives and the order


def test_level_from_file_name() -> None:
    assert [level_of(p) for p in ("validation_L1.jsonl", "validation_L3.json", "training_6k.jsonl")] == \
        ["L1", "L3", "train"]


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(golden_choice_idx="E"), "golden_choice_idx must be one of A, B, C, D"),
    (lambda r: r.update(golden_choice_idx="B"), "golden_choice_idx B is 'take cereal bag' but answer is"),
    (lambda r: r.pop("choice_c"), "field 'choice_c' must be a non-empty string"),
    (lambda r: r.update(task_progress_metadata="none"), "task_progress_metadata must be a list"),
    (lambda r: r.pop("sample_id"), "needs a sample_id"),
    (lambda r: (r.pop("golden_choice_idx"), r.update(negative_answers=["a", "put cereal box into cupboard", "a"])),
     "negative_answers has 1 distinct wrong answers; 3 are needed"),
])
def test_malformed_records_name_file_and_record(tmp_path: Path, edit, message: str) -> None:
    lines = (FIXTURES / "validation_L2.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    edit(rec)
    bad = tmp_path / "validation_L1.jsonl"
    bad.write_text("\n".join([lines[1], json.dumps(rec)]) + "\n")
    with pytest.raises(DataError, match=message) as e:
        read_seed_bench_r1(bad, "/data")
    assert f"{bad}:2" in str(e.value)


def test_malformed_files(tmp_path: Path) -> None:
    bad = tmp_path / "v.jsonl"
    bad.write_text('{"sample_id": 1}\n[1, 2\n')
    with pytest.raises(DataError, match=rf"{bad}:2: malformed JSON"):
        read_seed_bench_r1(bad, "/data")
    bad.write_text('{"sample_id": 1}\n')
    with pytest.raises(DataError, match=rf"{bad}:1 \(sample_id 1\): task_progress_metadata must be a list"):
        read_seed_bench_r1(bad, "/data")
    bad.write_text('"x"\n')
    with pytest.raises(DataError, match=rf"{bad}:1: a record must be a JSON object"):
        read_seed_bench_r1(bad, "/data")
    js = tmp_path / "validation_L3.json"
    js.write_text(json.dumps([json.loads(x) for x in (FIXTURES / "validation_L2.jsonl").read_text().splitlines()]))
    rows, _ = read_seed_bench_r1(js, "/data")
    assert [r.task for r in rows] == ["L3", "L3"]
    js.write_text(json.dumps({"sample_id": 1}))
    with pytest.raises(DataError, match="expected a JSON list of records, got dict"):
        read_seed_bench_r1(js, "/data")


def test_cli_import(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reelrl.cli import app

    out = tmp_path / "l2.jsonl"
    res = CliRunner().invoke(app, ["import-seed-bench-r1", str(FIXTURES / "validation_L2.jsonl"), "/data", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"rows": 2, "no_video": 1}
    assert [r.id for r in load_jsonl(out, check_videos=False)] == ["L2-115", "L2-ego4d-7"]
