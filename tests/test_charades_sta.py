"""Charades-STA importer: the published line format (VIDEO START END##sentence) and Charades' duration CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reelrl.cli import app
from reelrl.data.charades_sta import QUESTION, convert_charades_sta, read_charades_sta, read_durations
from reelrl.data.schema import DataError, load_jsonl

FIXTURES = Path(__file__).parent / "fixtures"
STA, CSV = FIXTURES / "charades_sta_sample.txt", FIXTURES / "charades_v1_sample.csv"


def test_published_format_converts_to_grounding_rows(tmp_path):
    rows, counts = read_charades_sta(STA, tmp_path / "videos")
    assert counts == {"rows": 4, "clipped": 0}
    assert [r.id for r in rows] == ["AO8RW-0", "AO8RW-1", "Y6R7T-0", "Y6R7T-1"]
    r = rows[2]
    assert r.video == str((tmp_path / "videos" / "Y6R7T.mp4").absolute())
    assert r.question == QUESTION.format(sentence="person turn a light on")
    assert (r.answer, r.time_span, r.problem_type, r.task) == ("24.3 to 30.4", (24.3, 30.4), "temporal_grounding",
                                                               "charades_sta")
    assert r.meta == {"video_id": "Y6R7T", "sentence": "person turn a light on", "duration": None}


def test_durations_clip_ends_past_the_video_as_the_common_loaders_do(tmp_path):
    assert read_durations(CSV) == {"AO8RW": 33.67, "Y6R7T": 32.0}
    out = tmp_path / "sta.jsonl"
    assert convert_charades_sta(STA, tmp_path, out, info=CSV) == {"rows": 4, "clipped": 1}
    last = load_jsonl(out, check_videos=False)[-1]
    assert (last.answer, last.time_span) == ("28.1 to 32", (28.1, 32.0))
    assert last.meta["duration"] == 32.0


@pytest.mark.parametrize(("line", "message"), [
    ("AO8RW 0.0 6.9 a person sits.", r"sample.txt:1: expected 'VIDEO START END##sentence'"),
    ("AO8RW 0.0##a person sits.", r":1: expected 'VIDEO START END##sentence'"),
    ("AO8RW 0.0 x##a person sits.", r":1: end 'x' is not a number"),
    ("AO8RW nan 3##a person sits.", r":1: start 'nan' must be a finite number >= 0"),
    ("AO8RW 7 3##a person sits.", r":1: start 7 is after end 3"),
    ("AO8RW 1 3##  .", r":1: the query sentence is empty"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    src = tmp_path / "sample.txt"
    src.write_text(line + "\n")
    with pytest.raises(DataError, match=message):
        read_charades_sta(src, tmp_path)


def test_a_start_past_the_video_and_an_unknown_video_are_errors(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("Y6R7T 40.0 45.0##person sits.\n")
    with pytest.raises(DataError, match=r"s.txt:1: start 40.0 is not inside the video \(32 s long\)"):
        read_charades_sta(src, tmp_path, read_durations(CSV))
    src.write_text("ZZZZZ 1 2##person sits.\n")
    with pytest.raises(DataError, match=r"video ZZZZZ has no length in the durations file"):
        read_charades_sta(src, tmp_path, read_durations(CSV))


def test_cli_import_writes_rows_that_load(tmp_path):
    out = tmp_path / "sta.jsonl"
    res = CliRunner().invoke(app, ["import-charades-sta", str(STA), str(tmp_path), str(out), "--info", str(CSV)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"rows": 4, "clipped": 1}
    assert len(out.read_text().splitlines()) == 4
    res = CliRunner().invoke(app, ["import-charades-sta", str(STA), str(tmp_path), str(out), "--check-videos"])
    assert res.exit_code == 2 and "video file not found" in " ".join(res.output.split())
