"""CLEVRER (Yi et al. 2020, arXiv 1910.01442): collision events; descriptive, explanatory, predictive and
counterfactual questions.

Published layout (clevrer.csail.mit.edu: ``validation.json`` and ``video_validation.zip``)::

    ROOT/validation.json                  the annotations (``train.json`` the same; the test set has no answers)
    ROOT/**/<video_filename>              video_validation.zip unpacked (e.g. video_validation/video_10000-11000/)

A record is one video: ``scene_index``, ``video_filename``, ``questions``; a
question has ``question_id``, ``question``, ``question_type``
(``descriptive`` / ``explanatory`` / ``predictive`` / ``counterfactual``) and
either ``answer`` (descriptive: a word or number, with ``question_subtype``)
or ``choices`` (``[{"choice_id", "choice", "answer": "correct" | "wrong"}]``).
One sample per question, id ``<scene_index>-<question_id>``.

Prompt: CLEVRER publishes no prompt for language models; reelrl asks a
descriptive question with "Answer with a single word or number." and a
multiple-choice one with its choices as ``A. <choice>`` lines and "Select all
the choices that are correct and answer with their letters, separated by
commas." (the choices of a question are judged one by one in CLEVRER, so any
subset may be right).

Scores, CLEVRER's metrics (the paper's Table 2): descriptive questions:
accuracy of the answer word (benchmark mode: the first word of the output,
lower-cased, trailing ``.`` removed; strict: the whole tag content so
normalised); multiple-choice questions: ``per_option`` (the share of all
choices whose correct/wrong call is right) and ``per_question`` (every choice right) accuracy, per
question type. A completion whose letters cannot be read selects no choice
in benchmark mode and scores 0 on every choice in strict mode (no tag).
``accuracy`` is the mean per-question score over all questions (reelrl's
summary line; CLEVRER reports the per-type numbers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reelrl.data.answers import extract_tag, parse_choices
from reelrl.data.schema import LETTERS, DataError, VideoRow
from reelrl.eval.bench.base import (
    Benchmark,
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

QUESTION_TYPES = ("descriptive", "explanatory", "predictive", "counterfactual")
DESCRIPTIVE_POST = "Answer with a single word or number."
CHOICE_POST = "Select all the choices that are correct and answer with their letters, separated by commas."


def _word(text: str) -> str:
    return text.strip().lower().rstrip(".").strip()


@BENCHMARKS.register("clevrer")
class CLEVRER(Benchmark):
    name = "clevrer"
    title = "CLEVRER"
    layout = "validation.json, **/<video_filename> (video_validation.zip)"
    source = "CLEVRER paper metrics (per-option, per-question accuracy)"

    def load(self, root: Path, annotations: Path | None = None, check_videos: bool = True) -> list[VideoRow]:
        path = find_annotations(root, ["validation.json", "train.json"], annotations, "CLEVRER")
        videos: dict[str, list[Path]] = {}
        for p in root.rglob("*.mp4"):
            videos.setdefault(p.name, []).append(p)
        rows = []
        for where, rec in read_records(path):
            scene = require(rec, "scene_index", where, (int, str))
            where = f"{where} (scene_index {scene})"
            name = require(rec, "video_filename", where)
            found = sorted(videos.get(name, []))
            if len(found) > 1:
                raise DataError(f"{where}: video {name} occurs more than once under {root}: "
                                + ", ".join(str(p) for p in found))
            video = resolve_video(found or [root / name], where, check_videos)
            for j, q in enumerate(require(rec, "questions", where, list)):
                qwhere = f"{where} question {j}"
                qid = require(q, "question_id", qwhere, (int, str))
                qwhere = f"{where} (question_id {qid})"
                qtype = require(q, "question_type", qwhere)
                if qtype not in QUESTION_TYPES:
                    raise DataError(f"{qwhere}: question_type must be one of {', '.join(QUESTION_TYPES)}, "
                                    f"got {qtype!r}")
                fields = {"question_type": qtype, "scene_index": scene}
                common = dict(id=f"{scene}-{qid}", video=str(video), question=require(q, "question", qwhere),
                              task=qtype)
                if qtype == "descriptive":
                    answer = require(q, "answer", qwhere, (str, int))
                    fields["question_subtype"] = q.get("question_subtype")
                    rows.append(make_row(qwhere, **common, answer=str(answer), problem_type="free_form",
                                         meta={"bench": self.name, "fields": fields}))
                    continue
                choices = require(q, "choices", qwhere, list)
                if not 2 <= len(choices) <= len(LETTERS):
                    raise DataError(f"{qwhere}: needs 2 or more choices, got {len(choices)}")
                texts, labels = [], []
                for k, c in enumerate(choices):
                    cw = f"{qwhere} choice {k}"
                    texts.append(require(c, "choice", cw))
                    label = require(c, "answer", cw)
                    if label not in ("correct", "wrong"):
                        raise DataError(f"{cw}: answer must be 'correct' or 'wrong', got {label!r}")
                    labels.append(label == "correct")
                gold = ",".join(LETTERS[k] for k, ok in enumerate(labels) if ok)
                rows.append(make_row(qwhere, **common, options=texts, answer=gold or "none",
                                     problem_type="multi_choice" if gold else "free_form",
                                     meta={"bench": self.name, "fields": fields, "correct": labels}))
        return unique_ids(rows, path)

    def prompt(self, row: VideoRow) -> str:
        if row.options is None:
            return f"{row.question}\n{DESCRIPTIVE_POST}"
        return f"{row.prompt_text()}\n{CHOICE_POST}"

    def judge(self, text: str, row: VideoRow, mode: str) -> dict[str, Any]:
        tag = extract_tag(text)
        if row.options is None:
            if mode == "strict":
                pred = None if tag is None else _word(tag)
            else:
                words = answer_text(text).strip().split()
                pred = _word(words[0]) if words else ""
            return {"pred": pred, "score": float(pred is not None and pred == _word(row.answer))}
        labels: list[bool] = row.meta["correct"]
        source = tag if mode == "strict" else answer_text(text)
        chosen = None if source is None else parse_choices(source, len(labels))
        if chosen is None and mode == "benchmark":
            chosen = set()
        if chosen is None:
            return {"pred": None, "score": 0.0, "option_hits": 0, "options": len(labels)}
        hits = [(LETTERS[k] in chosen) == ok for k, ok in enumerate(labels)]
        return {"pred": sorted(chosen), "score": float(all(hits)), "option_hits": sum(hits), "options": len(hits)}

    def summarize(self, records: list[dict], mode: str) -> dict[str, Any]:
        per: dict[str, dict[str, Any]] = {}
        for qtype in QUESTION_TYPES:
            recs = [r for r in records if r["fields"]["question_type"] == qtype]
            if not recs:
                continue
            if qtype == "descriptive":
                per[qtype] = {"n": len(recs), "accuracy": mean([r[mode]["score"] for r in recs])}
            else:
                per[qtype] = {"n": len(recs), "per_option": sum(r[mode]["option_hits"] for r in recs)
                              / sum(r[mode]["options"] for r in recs),
                              "per_question": mean([r[mode]["score"] for r in recs])}
        return {"accuracy": mean([r[mode]["score"] for r in records]), "question_type": per}
