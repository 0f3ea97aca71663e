"""data.max_prompt_tokens: a row whose prompt is too long is a counted skip naming the row, never a huge prompt."""

from __future__ import annotations

import json
from pathlib import Path

from reelrl.config import config_from_dict
from reelrl.pipeline import Pipeline


def _rows_with_a_huge_question(tiny_gym: Path, out: Path) -> str:
    rows = [json.loads(x) for x in (tiny_gym / "train.jsonl").read_text().splitlines()]
    rows[1]["question"] = "How many? " * 500_000  # 5 MB of text
    for r in rows:
        r["video"] = str(tiny_gym / r["video"])
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows[1]["id"]


def test_a_5mb_question_is_a_counted_skip_before_its_video_is_decoded(recipe_dict, tiny_gym, tmp_path, monkeypatch):
    from reelrl.data import prompts

    decoded = []
    real = prompts.PromptEncoder.frames
    monkeypatch.setattr(prompts.PromptEncoder, "frames", lambda self, row: decoded.append(row.id) or real(self, row))
    huge = _rows_with_a_huge_question(tiny_gym, tmp_path / "train.jsonl")
    cfg = dict(recipe_dict, data={"train": str(tmp_path / "train.jsonl"), "shuffle": False})
    cfg["rl"] = dict(recipe_dict["rl"], steps=2, prompts_per_step=2)
    pipe = Pipeline(config_from_dict(cfg))
    pipe.run()
    done = json.loads((Path(cfg["output_dir"]) / "0-rl" / "done.json").read_text())
    assert done["skipped_videos"] == 1 and huge not in decoded


def test_the_whole_prompt_counts_video_tokens_and_the_message_names_the_row(recipe_dict, tiny_gym, caplog):
    from reelrl.data.schema import load_jsonl

    cfg = config_from_dict(dict(recipe_dict, data=dict(recipe_dict["data"], max_prompt_tokens=60)))
    pipe = Pipeline(cfg)
    _, processor = pipe.load(for_training=False)
    enc = pipe.encoder(processor)
    rows = load_jsonl(tiny_gym / "train.jsonl")[:2]
    assert [enc.try_encode(r) for r in rows] == [None, None]  # text fits; text + 16 frames' tokens do not
    msg = enc.skipped[rows[0].id]
    assert msg.startswith(f"row {rows[0].id}: prompt too long (the whole prompt is ")
    assert msg.endswith("tokens, data.max_prompt_tokens is 60)")
    enc.max_prompt_tokens = None
    assert enc.try_encode(rows[0]).length > 60
