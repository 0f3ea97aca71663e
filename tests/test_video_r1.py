"""Tests of the Video-R1 importer on a hand-written fixture and on malformed rows."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from reelrl.data.schema import DataError, load_jsonl
from reelrl.data.video_r1 import convert_video_r1, import_video_r1

FIXTURE = Path(__file__).parent / "fixtures" / "video_r1_sample.json"


@pytest.fixture
def raw() -> list[dict]:
    return json.loads(FIXTURE.read_text())


def write_rows(tmp_path: Path, rows: list, name: str = "src.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(rows))
    return p


def test_fixture_every_field(tmp_path: Path) -> None:
    rows, counts = import_video_r1(FIXTURE, tmp_path / "data")
    root = os.path.abspath(tmp_path / "data")
    assert counts == {
        "total": 6, "imported": 5, "skipped_image": 1,
        "problem_type/multiple_choice": 1, "problem_type/numerical": 1, "problem_type/ocr": 1,
        "problem_type/free_form": 1, "problem_type/regression": 1,
    }
    by_id = {r.id: r for r in rows}
    assert list(by_id) == ["101", "102", "103", "104", "105"]

    mc = by_id["101"]
    assert mc.video == os.path.join(root, "Evaluation", "ball.mp4")
    assert mc.question == "What color is the ball when it stops?"
    assert mc.options == ["red", "blue", "green", "yellow"]
    assert mc.answer == "B" and mc.problem_type == "multiple_choice" and mc.task == "multiple_choice"
    assert mc.reasoning == "The ball rolls left and ends up blue."
    assert mc.meta == {"data_type": "video", "video_r1_problem_type": "multiple choice", "data_source": "CLEVRER"}
    assert mc.prompt_text().endswith("A. red\nB. blue\nC. green\nD. yellow")

    num = by_id["102"]
    assert (num.options, num.answer, num.problem_type, num.task) == (None, "3", "numerical", "count")
    assert num.reasoning == "One, then two more."
    assert num.video == os.path.join(root, "Train", "room.mp4")

    ocr = by_id["103"]
    assert (ocr.answer, ocr.problem_type, ocr.reasoning) == ("NO PARKING HERE", "ocr", None)

    ff = by_id["104"]
    assert (ff.answer, ff.problem_type) == ("The dog chases a red ball.", "free_form")
    assert ff.reasoning == "The dog is chasing something."  # process without tags kept as is

    reg = by_id["105"]
    assert (reg.answer, reg.problem_type, reg.reasoning) == ("12.5", "regression", "About twelve and a half meters.")
    assert reg.video == os.path.join(root, "Train", "car.mp4")  # path without "./"


def test_keep_images(tmp_path: Path) -> None:
    rows, counts = import_video_r1(FIXTURE, tmp_path, skip_images=False)
    assert counts["imported"] == 6 and counts["skipped_image"] == 0
    img = rows[-1]
    assert img.id == "106" and img.meta["data_type"] == "image"
    assert img.video.endswith(os.path.join("Images", "shapes.jpg")) and img.options == ["circle", "square"]


def test_jsonl_source_matches_json(tmp_path: Path, raw: list[dict]) -> None:
    src = tmp_path / "src.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in raw) + "\n\n")
    from_jsonl, c1 = import_video_r1(src, tmp_path)
    from_json, c2 = import_video_r1(FIXTURE, tmp_path)
    assert from_jsonl == from_json and c1 == c2


def test_answer_normalisation(tmp_path: Path, raw: list[dict]) -> None:
    rows = copy.deepcopy(raw[:2])
    rows[0]["solution"] = "<think>hm</think><answer>C. green</answer>"
    rows[1]["solution"] = "<answer>1,000</answer>"
    out, _ = import_video_r1(write_rows(tmp_path, rows), tmp_path)
    assert [r.answer for r in out] == ["C", "1000"]


def test_convert_roundtrip(tmp_path: Path) -> None:
    out = tmp_path / "out" / "rows.jsonl"
    counts = convert_video_r1(FIXTURE, tmp_path / "videos", out)
    assert counts["imported"] == 5
    loaded = load_jsonl(out, check_videos=False)
    expected, _ = import_video_r1(FIXTURE, tmp_path / "videos")
    assert loaded == expected


@pytest.mark.parametrize(
    "index,edit,message",
    [
        (2, lambda r: r.update(solution="NO PARKING"), "row 2: field solution: no <answer>"),
        (0, lambda r: r.update(problem_type="yes/no"), "row 0: field problem_type: unknown 'yes/no'"),
        (0, lambda r: r.update(options=["A. red", "C. blue"]), r"row 0: field options\[1\]: prefix 'C' out of order"),
        (0, lambda r: r.update(solution="<answer>E</answer>"), "row 0: field solution: 'E' is not an option letter"),
        (0, lambda r: r.update(options=["A. red"], solution="<answer>A</answer>"),
         "row 0: invalid row: field options: .*2..26"),
        (1, lambda r: r.update(solution="<answer>many</answer>"), "row 1: field solution: 'many' is not a number"),
        (3, lambda r: r.pop("path"), r"row 3: missing field\(s\) \['path'\]"),
        (4, lambda r: r.update(data_type="audio"), "row 4: field data_type: expected 'video' or 'image'"),
        (4, lambda r: r.update(problem_id=101), "row 4: duplicate problem_id '101' .first at .*row 0"),
    ],
)
def test_malformed_row_names_file_and_index(tmp_path: Path, raw: list[dict], index: int, edit, message: str) -> None:
    edit(raw[index])
    src = write_rows(tmp_path, raw)
    with pytest.raises(DataError, match=message) as err:
        import_video_r1(src, tmp_path)
    assert str(err.value).startswith(f"{src}: row {index}")


def test_malformed_image_row_is_skipped_when_skipping(tmp_path: Path, raw: list[dict]) -> None:
    raw[5]["solution"] = "no tags"  # the image row
    _, counts = import_video_r1(write_rows(tmp_path, raw), tmp_path)
    assert counts["skipped_image"] == 1
    with pytest.raises(DataError, match="row 5: field solution"):
        import_video_r1(write_rows(tmp_path, raw), tmp_path, skip_images=False)


def test_file_level_errors(tmp_path: Path, raw: list[dict]) -> None:
    with pytest.raises(DataError, match="not found"):
        import_video_r1(tmp_path / "missing.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"problem_id\": 1,}]")
    with pytest.raises(DataError, match=f"{bad}: malformed JSON"):
        import_video_r1(bad, tmp_path)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(json.dumps(raw[0]) + "\n\nnot json\n")
    with pytest.raises(DataError, match=r"row 1 \(line 3\): malformed JSON"):
        import_video_r1(jsonl, tmp_path)
    with pytest.raises(DataError, match="no rows imported"):
        import_video_r1(write_rows(tmp_path, [raw[5]]), tmp_path)
    with pytest.raises(DataError, match="row 0: expected a JSON object, got list"):
        import_video_r1(write_rows(tmp_path, [[1, 2]]), tmp_path)


def test_check_videos(tmp_path: Path, raw: list[dict]) -> None:
    with pytest.raises(DataError, match="row 0: video file not found"):
        import_video_r1(FIXTURE, tmp_path, check_videos=True)
    for r in raw[:5]:
        p = tmp_path / r["path"]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    rows, _ = import_video_r1(FIXTURE, tmp_path, check_videos=True)
    assert len(rows) == 5
