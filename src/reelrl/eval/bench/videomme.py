"""Video-MME (Fu et al. 2024, arXiv 2405.21075): 900 videos, 2,700 four-option questions, short/medium/long.

Published layout (Hugging Face ``lmms-lab/Video-MME``, as lmms-eval's
``tasks/videomme`` reads it)::

    ROOT/videomme/test-00000-of-00001.parquet    the annotations
    ROOT/data/<videoID>.mp4                      the videos (videos_chunked_*.zip unpacked; .MP4 / .mkv accepted)

Record fields: ``video_id`` ("001"), ``duration`` (short / medium / long),
``domain`` (6), ``sub_category`` (30), ``url``, ``videoID`` (the YouTube id
naming the file), ``question_id`` ("001-1"), ``task_type`` (12), ``question``,
``options`` (four strings "A. ...", ..., "D. ..."), ``answer`` ("A".."D").

Prompt: Video-MME's own frames-only prompt (its README, "Frames"; the block
quoted in lmms-eval's ``utils.py``)::

    Select the best answer to the following multiple-choice question based on the video. Respond with only
    the letter (A, B, C, or D) of the correct option.
    <question>
    <the four options as published, one a line>
    The best answer is:

Difference: lmms-eval's default prompt says "based on the video and the
subtitles" even without subtitles and ends with "Answer with the option's
letter from the given choices directly."; reelrl sends Video-MME's own text.
Subtitles are not used (the "w/o subs" setting).

Benchmark extraction: Video-MME's ``extract_characters_regex``
(``eval_your_results.py``; :func:`reelrl.data.answers.videomme_letter`),
compared with the gold letter. A completion with no letter is wrong (counted
in the denominator, as lmms-eval counts it; Video-MME's script leaves such
rows out). lmms-eval >= 0.7 replaced the extraction with its own
``extract_mcq_answer``; reelrl keeps Video-MME's.

Scores: accuracy overall and by ``duration``, ``domain``, ``sub_category`` and
``task_type`` (the breakdowns of ``videomme_aggregate_results``).
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
    find_annotations,
    make_row,
    mean,
    read_records,
    require,
    resolve_video,
    unique_ids,
)
from reelrl.eval.bench.registry import BENCHMARKS

OPTION_PROMPT = ("Select the best answer to the following multiple-choice question based on the video. "
                 "Respond with only the letter (A, B, C, or D) of the correct option.")
POST_PROMPT = "The best answer is:"
DURATIONS = ("short", "medium", "long")
_OPTION = re.compile(r"^\s*([A-D])\s*[.:)]\s*(.*)$", re.DOTALL)


@BENCHMARKS.register("videomme")
class VideoMME(Benchmark):
    name = "videomme"
    title = "Video-MME"
    layout = "videomme/test-00000-of-00001.parquet, data/<videoID>.mp4"
    source = "Video-MME eval_your_results.py; lmms-eval tasks/videomme"

    def load(self, root: Path, annotations: Path | None = None, check_videos: bool = True) -> list[VideoRow]:
        path = find_annotations(root, ["videomme/test-00000-of-00001.parquet"], annotations, "Video-MME")
        rows = []
        for where, rec in read_records(path):
            qid = require(rec, "question_id", where)
            where = f"{where} (question_id {qid})"
            vid = require(rec, "videoID", where)
            options = require(rec, "options", where, list)
            if len(options) != 4 or not all(isinstance(o, str) for o in options):
                raise DataError(f"{where}: field 'options' must hold 4 strings, got {options!r}")
            texts = []
            for i, o in enumerate(options):
                m = _OPTION.match(o)
                if m is None or m.group(1) != LETTERS[i]:
                    raise DataError(f"{where}: option {i} must start with '{LETTERS[i]}.', got {o!r}")
                texts.append(m.group(2).strip())
            answer = require(rec, "answer", where)
            duration = require(rec, "duration", where)
            if duration not in DURATIONS:
                raise DataError(f"{where}: field 'duration' must be one of {', '.join(DURATIONS)}, got {duration!r}")
            fields = {"duration": duration, "domain": require(rec, "domain", where),
                      "sub_category": require(rec, "sub_category", where),
                      "task_type": require(rec, "task_type", where), "videoID": vid}
            video = resolve_video([root / "data" / f"{vid}{ext}" for ext in (".mp4", ".MP4", ".mkv")], where,
                                  check_videos)
            rows.append(make_row(where, id=qid, video=str(video), question=require(rec, "question", where),
                                 options=texts, answer=answer.strip(), problem_type="multiple_choice",
                                 task=duration, meta={"bench": self.name, "fields": fields,
                                                      "options_published": options}))
        return unique_ids(rows, path)

    def prompt(self, row: VideoRow) -> str:
        options = "\n".join(row.meta["options_published"])
        return f"{OPTION_PROMPT}\n{row.question}\n{options}\n{POST_PROMPT}"

    def judge(self, text: str, row: VideoRow, mode: str) -> dict[str, Any]:
        pred = extract_choice(text, len(row.options or ()), "strict" if mode == "strict" else "benchmark")
        return {"pred": pred, "score": float(pred is not None and pred.lower() == row.answer.lower())}

    def summarize(self, records: list[dict], mode: str) -> dict[str, Any]:
        return {"accuracy": mean([r[mode]["score"] for r in records]),
                **{key: accuracy_by(records, mode, key)
                   for key in ("duration", "domain", "sub_category", "task_type")}}
