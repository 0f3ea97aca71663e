"""VideoTG-R1's data agents: difficulty = 1 - zero-shot IoU, boundary reflection flags and drops rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from reelrl.cli import app
from reelrl.data.schema import load_jsonl
from reelrl.eval import grounding_agents as agents
from reelrl.gym import GymSpec, generate_gym


@pytest.fixture(scope="module")
def grounding_gym(tmp_path_factory):
    out = tmp_path_factory.mktemp("tg")
    generate_gym(out, GymSpec(families=["temporal_grounding"], seed=2), 4, 2, 4, progress=False)
    return out


def test_outside_fraction_hand_computed():
    assert agents.outside_fraction((1.0, 2.0), (1.0, 2.0)) == 0.0
    assert agents.outside_fraction((0.0, 2.0), (1.0, 3.0)) == pytest.approx(0.5)
    assert agents.outside_fraction((3.0, 4.0), (1.0, 2.0)) == 1.0
    assert agents.outside_fraction((2.0, 1.0), (0.0, 5.0)) == 0.0  # reversed: nothing found


def test_reflection_blanks_exactly_the_annotated_frames():
    frames = np.full((16, 8, 8, 3), 200, dtype=np.uint8)  # [T, H, W, 3]
    out = agents._blank_span(1.0 / 4.0, 2.0 / 4.0)(frames)  # span [1, 2) s of a 4 s clip
    blanked = [t for t in range(16) if not out[t].any()]
    assert blanked == [4, 5, 6, 7]


def _fake_decode(texts_by_question):
    seen = []

    def decode(vlm, tokenizer, encoder, rows, sampling, views=None, **kw):
        seen.append((rows, views))
        return [(r, texts_by_question(r), 5) for r in rows]

    return decode, seen


def test_flags_and_drops_rows_whose_query_is_found_elsewhere(grounding_gym, monkeypatch):
    rows = load_jsonl(grounding_gym / "test.jsonl")
    gold = {r.id: agents.gold_span(r) for r in rows}
    answers = {  # row -> what the model answers with the annotated span blanked
        rows[0].id: "<answer>none</answer>",
        rows[1].id: "<answer>{e} to {e2}</answer>",  # entirely after the annotated span: flagged
        rows[2].id: "<answer>{s} to {e}</answer>",  # the annotated span itself: not flagged
        rows[3].id: "no answer tag 0 to 1",
    }

    def text(r):
        s, e = gold[r.id]
        return answers[r.id].format(s=s, e=e, e2=e + 0.5)

    decode, seen = _fake_decode(text)
    monkeypatch.setattr(agents, "decode_rows", decode)
    out, counts = agents.reflect_boundaries(None, None, None, rows, None)
    assert [r.meta["boundary_reflection"]["flagged"] for r in out] == [False, True, False, False]
    assert out[1].meta["boundary_reflection"]["span"] == [gold[rows[1].id][1], gold[rows[1].id][1] + 0.5]
    assert (counts.decoded, counts.flagged, counts.dropped) == (4, 1, 0)
    asked, views = seen[0]
    s, e = gold[rows[0].id]
    assert f"from {s:g} to {e:g} seconds is blanked out" in asked[0].question
    assert asked[0].question.startswith(rows[0].question) and views[0][1].startswith("reflect(")
    kept, counts = agents.reflect_boundaries(None, None, None, rows, None, drop_flagged=True)
    assert [r.id for r in kept] == [rows[0].id, rows[2].id, rows[3].id] and counts.dropped == 1


def test_cli_writes_difficulty_from_zero_shot_iou_with_the_tiny_model(recipe_dict, tiny_model_dir, grounding_gym,
                                                                       tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict))
    out = tmp_path / "rated.jsonl"
    res = CliRunner().invoke(app, ["grounding-agents", str(recipe), "--model", str(tiny_model_dir),
                                   "--data", str(grounding_gym / "test.jsonl"), "--out", str(out), "--reflect"])
    assert res.exit_code == 0, res.output
    counts = json.loads(res.stdout[res.stdout.index("{"):])  # after transformers' loading bar
    assert counts["difficulty"]["decoded"] == 4 and counts["reflection"]["decoded"] == 4
    rows = load_jsonl(out)
    assert len(rows) == 4
    for r in rows:
        iou = r.meta["zero_shot_iou"]
        assert 0.0 <= iou <= 1.0 and r.difficulty == pytest.approx(1.0 - iou)
        assert set(r.meta["boundary_reflection"]) == {"answer", "span", "flagged"}
