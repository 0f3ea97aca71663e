"""Video-Holmes (Cheng et al. 2025, arXiv 2505.21374): 1,837 six-option reasoning questions on 270 short films.

Published layout (Hugging Face ``TencentARC/Video-Holmes``, as its
``evaluate.py`` reads it: ``Benchmark/test_Video-Holmes.json`` and ``Benchmark/videos/``)::

    ROOT/test_Video-Holmes.json           the annotations (a JSON list)
    ROOT/videos/<video ID>.mp4            videos.zip unpacked (``videos_cropped/``, lmms-eval's folder, also read)

Record fields: ``video ID``, ``Question ID``, ``Question Type`` (SR, IMC,
TCI, TA, MHR, PAR, CTI), ``Question``, ``Options`` (``{"A": ..., ..., "F": ...}``),
``Answer`` (a letter), ``Explanation``.

Prompt: ``evaluate.py``'s, verbatim: "Based on the given video, reason and
answer the single-choice question. Provide your reasoning between the <think>
and </think> tags, and then give your final answer between the <answer> and
</answer> tags. The question is: <Question>. The options are: A: ..., B: ....
Your answer:".

Benchmark extraction (``evaluate.py``): the last ``<answer>`` tag's content
(the whole output without one); the first of A..F followed by a space, a
colon or preceded by ``[`` (checked letter by letter in order A..F), else the
first of A..F occurring anywhere (again in order A..F); otherwise wrong.
Accuracy per question type and overall (all questions).
"""

from __future__ import annotations

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

PROMPT = ("Based on the given video, reason and answer the single-choice question. Provide your reasoning between "
          "the <think> and </think> tags, and then give your final answer between the <answer> and </answer> tags. "
          "The question is: {question}. The options are: {options}. Your answer:")
QUESTION_TYPES = ("SR", "IMC", "TCI", "TA", "MHR", "PAR", "CTI")


def holmes_letter(choice: str) -> str | None:
    """``evaluate.py``'s letter cascade over A..F; None where it answers 'WRONG'."""
    for x in "ABCDEF":
        if f"{x} " in choice or f"{x}:" in choice or f"[{x}" in choice:
            return x
    for x in "ABCDEF":
        if x in choice:
            return x
    return None


@BENCHMARKS.register("video_holmes")
class VideoHolmes(Benchmark):
    name = "video_holmes"
    title = "Video-Holmes"
    layout = "test_Video-Holmes.json, videos/<video ID>.mp4"
    source = "TencentARC/Video-Holmes evaluate.py"

    def load(self, root: Path, annotations: Path | None = None, check_videos: bool = True) -> list[VideoRow]:
        path = find_annotations(root, ["test_Video-Holmes.json"], annotations, "Video-Holmes")
        rows = []
        for where, rec in read_records(path):
            qid = require(rec, "Question ID", where, (str, int))
            where = f"{where} (Question ID {qid})"
            options = require(rec, "Options", where, dict)
            keys = sorted(options)
            if keys != list(LETTERS[: len(keys)]) or len(keys) < 2 or not all(isinstance(v, str)
                                                                               for v in options.values()):
                raise DataError(f"{where}: field 'Options' must map A, B, ... to strings, got {options!r}")
            vid = require(rec, "video ID", where)
            qtype = require(rec, "Question Type", where)
            video = resolve_video([root / "videos" / f"{vid}.mp4", root / "videos_cropped" / f"{vid}.mp4"], where,
                                  check_videos)
            rows.append(make_row(where, id=str(qid), video=str(video), question=require(rec, "Question", where),
                                 options=[options[k] for k in keys], answer=require(rec, "Answer", where).strip(),
                                 problem_type="multiple_choice", task=qtype,
                                 meta={"bench": self.name, "fields": {"question_type": qtype, "video_id": vid}}))
        return unique_ids(rows, path)

    def prompt(self, row: VideoRow) -> str:
        options = ", ".join(f"{LETTERS[i]}: {o}" for i, o in enumerate(row.options or ()))
        return PROMPT.format(question=row.question, options=options)

    def judge(self, text: str, row: VideoRow, mode: str) -> dict[str, Any]:
        pred = (extract_choice(text, len(row.options or ()), "strict") if mode == "strict"
                else holmes_letter(answer_text(text)))
        return {"pred": pred, "score": float(pred == row.answer)}

    def summarize(self, records: list[dict], mode: str) -> dict[str, Any]:
        return {"accuracy": mean([r[mode]["score"] for r in records]),
                "question_type": accuracy_by(records, mode, "question_type")}
