"""Row-level robustness of load_jsonl: bytes that are not UTF-8, bad time spans, grounding rows
without a span, video paths that are not files. Every error is a DataError naming file:line."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from reelrl.data.schema import DataError, VideoRow, load_jsonl


def row(i: int, **fields) -> dict:
    base = {"id": f"r{i}", "video": "v.mp4", "question": "When does it happen?", "answer": "B",
            "problem_type": "multiple_choice", "options": ["early", "late"]}
    return {**base, **fields}


def grounding(i: int, answer: str, **fields) -> dict:
    return row(i, answer=answer, problem_type="temporal_grounding", options=None, **fields)


def write_lines(path: Path, lines: list[str | bytes], newline: bytes = b"\n") -> Path:
    data = newline.join(x if isinstance(x, bytes) else x.encode("utf-8") for x in lines) + newline
    path.write_bytes(data)
    return path


def dump(obj: dict) -> str:
    return json.dumps(obj, allow_nan=True, ensure_ascii=False)


def load(path: Path) -> list[VideoRow]:
    return load_jsonl(path, check_videos=False)


# ---------------------------------------------------------------- encoding


def test_non_utf8_byte_names_file_line_and_column(tmp_path: Path) -> None:
    bad = dump(row(2, question="caf\u00e9?")).encode("utf-8").replace("\u00e9".encode(), b"\xe9")  # latin-1 e-acute
    path = write_lines(tmp_path / "rows.jsonl", [dump(row(0)), dump(row(1)), bad])
    col = bad.index(b"\xe9") + 1
    with pytest.raises(DataError, match=re.escape(f"rows.jsonl:3: not valid UTF-8 (byte 0xe9 at column {col}")):
        load(path)


def test_utf8_text_and_crlf_lines_still_load(tmp_path: Path) -> None:
    text = "caf\u00e9 \u2014 \u65e5\u672c?"
    path = write_lines(tmp_path / "rows.jsonl", [dump(row(0, question=text)), "", dump(row(1))], newline=b"\r\n")
    rows = load(path)
    assert [r.id for r in rows] == ["r0", "r1"] and rows[0].question == text
    # a later error still names the right line (blank line 2 counted)
    write_lines(path, [dump(row(0)), "", "{oops"], newline=b"\r\n")
    with pytest.raises(DataError, match=r"rows.jsonl:3: malformed JSON"):
        load(path)


def test_line_separators_inside_strings_stay_in_their_record(tmp_path: Path) -> None:
    """U+2028, U+2029 and NEL are legal raw inside JSON strings; only \\n / \\r end a JSON Lines record
    (str.splitlines would cut the record there). The same rule for datasets and for published files."""
    from reelrl.data.records import read_records

    text = "before\u2028after\u2029then\x85end"
    path = write_lines(tmp_path / "rows.jsonl", [dump(row(0, question=text)), dump(row(1))])
    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, not escaped
    assert [r.question for r in load(path)] == [text, "When does it happen?"]
    assert [(where, rec["question"]) for where, rec in read_records(path)] == [
        (f"{path}:1", text), (f"{path}:2", "When does it happen?")]


# ---------------------------------------------------------------- time spans


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ("[NaN, 2.0]", "start and end must be finite numbers"),
        ("[1.0, Infinity]", "start and end must be finite numbers"),
        ("[-Infinity, 1.0]", "start and end must be finite numbers"),
        ("[5.0, 2.0]", "start 5.0 is after end 2.0"),
        ("[-1.0, 2.0]", "start -1.0 is negative"),
    ],
)
def test_bad_time_span_names_line_and_field(tmp_path: Path, span: str, message: str) -> None:
    text = dump(row(1)).replace('"answer"', f'"time_span": {span}, "answer"')
    path = write_lines(tmp_path / "rows.jsonl", [dump(row(0)), text])
    expected = r"rows.jsonl:2: invalid row: field time_span: time span \[.*\]: " + re.escape(message)
    with pytest.raises(DataError, match=expected):
        load(path)


def test_good_time_spans_load(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rows.jsonl", [dump(row(0, time_span=[0, 0])), dump(row(1, time_span=[1.5, 7]))])
    assert [r.time_span for r in load(path)] == [(0.0, 0.0), (1.5, 7.0)]


def test_reversed_span_in_grounding_answer_names_line_and_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rows.jsonl", [dump(grounding(0, "2-6")), dump(grounding(1, "6.5 to 2 seconds"))])
    with pytest.raises(DataError, match=r"rows.jsonl:2: invalid row: field answer: '6.5 to 2 seconds' holds the time "
                                        r"span \[6.5, 2.0\]: start 6.5 is after end 2.0"):
        load(path)


def test_grounding_row_needs_a_span(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rows.jsonl", [dump(grounding(0, "2-6")), dump(grounding(1, "near the end"))])
    expected = (r"rows.jsonl:2: invalid row: field answer: a temporal_grounding row needs a time span, "
                r"but 'near the end' holds no \"s-e\" span and time_span is not set")
    with pytest.raises(DataError, match=expected):
        load(path)
    # a span in time_span is enough, and every accepted answer syntax is recognised
    rows = [grounding(0, "", time_span=[2, 6]), grounding(1, "3.5-4"), grounding(2, "[1, 2.5]"),
            grounding(3, "from 1s to 2s"), grounding(4, "near the end", time_span=[8, 9.5])]
    path = write_lines(tmp_path / "ok.jsonl", [dump(r) for r in rows])
    assert [r.id for r in load(path)] == ["r0", "r1", "r2", "r3", "r4"]


def test_bad_span_in_time_span_of_a_grounding_row(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rows.jsonl", [dump(grounding(0, "", time_span=[9, 3]))])
    expected = r"rows.jsonl:1: invalid row: field time_span: time span \[9.0, 3.0\]: start 9.0 is after end 3.0"
    with pytest.raises(DataError, match=expected):
        load(path)


# ---------------------------------------------------------------- video paths


def test_video_paths_that_are_not_files_name_the_reason(tmp_path: Path) -> None:
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    os.mkfifo(tmp_path / "pipe.mp4")
    cases = [
        ("folder.mp4", "is a directory, not a video file"),
        ("loop.mp4", "symlink loop"),
        ("pipe.mp4", r"is a FIFO \(named pipe\), not a video file"),
        ("/dev/null", "is a character device, not a video file"),
        ("missing.mp4", "video file not found"),
    ]
    for video, message in cases:
        path = write_lines(tmp_path / "rows.jsonl", [dump(row(0, video=video))])
        with pytest.raises(DataError, match=r"rows.jsonl:1: " + message + r".*: .*" + re.escape(video)):
            load_jsonl(path)


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rows.jsonl", [dump(row(0)), dump(row(1)), dump(row(0, answer="A"))])
    with pytest.raises(DataError, match=r"rows.jsonl:3: duplicate id 'r0' \(first at line 1\)"):
        load(path)
