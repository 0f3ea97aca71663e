"""LongVideoBench (Wu et al. 2024, arXiv 2407.15754): referring reasoning over videos up to an hour.

Published layout (Hugging Face ``longvideobench/LongVideoBench``)::

    ROOT/lvb_val.json                     the validation annotations (a JSON list)
    ROOT/videos/<video_path>              videos.tar.part.* unpacked

Record fields used: ``id``, ``video_path``, ``question``, ``candidates``
(2-5 option texts; the parquet export writes them as ``option0``..``option4``
with "N/A" past the last, which is read too), ``correct_choice`` (index),
``duration_group`` (15 / 60 / 600 / 3600 seconds), ``question_category``
(17 categories), ``topic_category``, ``level``.

Prompt (lmms-eval ``tasks/longvideobench``, ``longvideobench_val_v``, the
video-only setting without interleaved subtitles):
``<question>\\nA. <c0>\\nB. <c1>...\\nAnswer with the option's letter from the given choices directly.\\n``

Benchmark extraction (``parse_multi_choice_response``): remove each of the
answer prefixes ("The best answer is", ..., "Best option:"); the first of
``[ABCDE]`` in what remains. Accuracy overall and per ``duration_group`` and
``question_category`` (``longvideobench_aggregate_results``).

Difference: where the reference finds no letter (or more than 10 words and
no letter) it draws a random choice; reelrl scores that completion wrong
(``pred`` None), so the scores are reproducible.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from reelrl.data.answers import extract_choice
from reelrl.data.schema import LETTERS, DataError, VideoRow
from reelrl.eval.bench.base import (
    Benchmark,
    accuracy_by,
    answer_text,
    find_annotations,
    make_row,
    mean,
    read_records,
    require,
    resolve_video,
    unique_ids,
)
from reelrl.eval.bench.registry import BENCHMARKS

POST_PROMPT = "Answer with the option's letter from the given choices directly.\n"
ANSWER_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                   "The best option is", "The correct option is", "Best answer:", "Best option:")


def lvb_letter(response: str) -> str | None:
    """``parse_multi_choice_response`` without its random fallback: the letter, or None."""
    s = response.strip()
    for prefix in ANSWER_PREFIXES:
        s = s.replace(prefix, "")
    m = re.search(r"[ABCDE]", s)  # the reference's "> 10 words and no letter" test changes nothing here
    return None if m is None else m[0]


def _candidates(rec: dict, where: str) -> list[str]:
    if "candidates" in rec:
        cands = require(rec, "candidates", where, list)
    else:
        cands = []
        for i in range(5):
            c = rec.get(f"option{i}")
            if c is None or c == "N/A":
                break
            cands.append(c)
    if not 2 <= len(cands) <= 5 or not all(isinstance(c, str) for c in cands):
        raise DataError(f"{where}: needs 2-5 option strings in 'candidates' (or option0..option4), got {cands!r}")
    return cands


@BENCHMARKS.register("longvideobench")
class LongVideoBench(Benchmark):
    name = "longvideobench"
    title = "LongVideoBench"
    layout = "lvb_val.json, videos/<video_path>"
    source = "lmms-eval tasks/longvideobench (longvideobench_val_v)"

    def load(self, root: Path, annotations: Path | None = None, check_videos: bool = True) -> list[VideoRow]:
        path = find_annotations(root, ["lvb_val.json", "validation-00000-of-00001.parquet"], annotations,
                                "LongVideoBench")
        rows = []
        for where, rec in read_records(path):
            rid = require(rec, "id", where)
            where = f"{where} (id {rid})"
            cands = _candidates(rec, where)
            k = require(rec, "correct_choice", where, int)
            if not 0 <= k < len(cands):
                raise DataError(f"{where}: correct_choice {k} is outside the {len(cands)} candidates")
            fields = {"duration_group": str(require(rec, "duration_group", where, (int, float, str))),
                      "question_category": require(rec, "question_category", where),
                      "topic_category": rec.get("topic_category")}
            video = resolve_video([root / "videos" / require(rec, "video_path", where)], where, check_videos)
            rows.append(make_row(where, id=rid, video=str(video), question=require(rec, "question", where),
                                 options=cands, answer=LETTERS[k], problem_type="multiple_choice",
                                 task=fields["question_category"], meta={"bench": self.name, "fields": fields}))
        return unique_ids(rows, path)

    def prompt(self, row: VideoRow) -> str:
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(row.options or ()))
        return f"{row.question}\n{options}\n{POST_PROMPT}"

    def judge(self, text: str, row: VideoRow, mode: str) -> dict[str, Any]:
        pred = (extract_choice(text, len(row.options or ()), "strict") if mode == "strict"
                else lvb_letter(answer_text(text)))
        return {"pred": pred, "score": float(pred == row.answer)}

    def summarize(self, records: list[dict], mode: str) -> dict[str, Any]:
        return {"accuracy": mean([r[mode]["score"] for r in records]),
                "duration_group": accuracy_by(records, mode, "duration_group"),
                "question_category": accuracy_by(records, mode, "question_category")}
