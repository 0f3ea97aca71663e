"""VSI-Bench (Yang et al. 2024, "Thinking in Space", arXiv 2412.14171): spatial questions over indoor scans.

Published layout (Hugging Face ``nyu-visionx/VSI-Bench``)::

    ROOT/test.jsonl                       the annotations (or test-00000-of-00001.parquet, the first release)
    ROOT/<dataset>/<scene_name>.mp4       arkitscenes.zip, scannet.zip, scannetpp.zip unpacked

Record fields: ``id``, ``dataset`` (arkitscenes / scannet / scannetpp),
``scene_name``, ``question_type``, ``question``, ``options`` (``["A. ...",
...]`` for multiple-choice types, null otherwise), ``ground_truth`` (a letter,
or a number as text).

Question types (``vision-x-nyu/thinking-in-space``, ``lmms_eval/tasks/vsibench/utils.py``):
multiple-choice (MCA) ``object_rel_direction_easy|medium|hard``,
``object_rel_distance``, ``route_planning``, ``obj_appearance_order``;
numerical (NA) ``object_abs_distance``, ``object_counting``,
``object_size_estimation``, ``room_size_estimation``.

Prompt (``vsibench_doc_to_text``): ``These are frames of a video.\\n<q>\\n``
then for MCA ``Options:\\n<options one a line>\\nAnswer with the option's letter
from the given choices directly.`` and for NA ``Please answer the question
using a single word or phrase.``

Benchmark extraction and scores, as the reference: ``fuzzy_matching`` (the
text before the first space, trailing ``.`` removed); MCA: case-insensitive
exact match with the letter; NA: that word as a float, scored by the mean
relative accuracy over the confidence thresholds 0.50, 0.55, ..., 0.95, an
error exactly on a threshold counting as a hit (``<=``;
:func:`reelrl.rewards.functions.mra_score`), a word that is no number scoring
0. Per question type the mean accuracy or MRA; ``object_rel_direction`` is
the mean of its three difficulties (one absent counts 0, as the reference's
``pop(..., 0.)``); ``overall`` is the mean over the per-type scores present.
lmms-eval >= 0.7 reads the first number anywhere in the output for NA
(``extract_number``); reelrl keeps the benchmark's own ``fuzzy_matching``.
Strict mode reads the ``<answer>`` tag with reelrl's parsers (the last number
for NA).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from reelrl.data.answers import extract_choice, extract_tag, parse_number
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
from reelrl.rewards.functions import mra_score

MCA_TYPES = ("object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard",
             "object_rel_distance", "route_planning", "obj_appearance_order")
NA_TYPES = ("object_abs_distance", "object_counting", "object_size_estimation", "room_size_estimation")
PRE_PROMPT = "These are frames of a video."
MCA_POST = "Answer with the option's letter from the given choices directly."
NA_POST = "Please answer the question using a single word or phrase."
_OPTION = re.compile(r"^\s*([A-Z])\s*[.:)]\s*(.*)$", re.DOTALL)
DIRECTION = "object_rel_direction"


def fuzzy_matching(pred: str) -> str:
    """VSI-Bench's ``fuzzy_matching``: the text before the first space, trailing periods removed, stripped."""
    return pred.split(" ")[0].rstrip(".").strip()


def to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@BENCHMARKS.register("vsibench")
class VSIBench(Benchmark):
    name = "vsibench"
    title = "VSI-Bench"
    layout = "test.jsonl (or test-00000-of-00001.parquet), <dataset>/<scene_name>.mp4"
    source = "thinking-in-space lmms_eval/tasks/vsibench/utils.py"

    def load(self, root: Path, annotations: Path | None = None, check_videos: bool = True) -> list[VideoRow]:
        path = find_annotations(root, ["test.jsonl", "test-00000-of-00001.parquet"], annotations, "VSI-Bench")
        rows = []
        for where, rec in read_records(path):
            rid = require(rec, "id", where, (int, str))
            where = f"{where} (id {rid})"
            qtype = require(rec, "question_type", where)
            gt = require(rec, "ground_truth", where, (str, int, float))
            video = resolve_video([root / require(rec, "dataset", where) / f"{require(rec, 'scene_name', where)}.mp4"],
                                  where, check_videos)
            meta = {"bench": self.name, "fields": {"question_type": qtype, "dataset": rec["dataset"]}}
            common = dict(id=str(rid), video=str(video), question=require(rec, "question", where), task=qtype)
            if qtype in MCA_TYPES:
                options = require(rec, "options", where, list)
                texts = []
                for i, o in enumerate(options):
                    m = _OPTION.match(o) if isinstance(o, str) else None
                    if m is None or m.group(1) != LETTERS[i]:
                        raise DataError(f"{where}: option {i} must be a string starting with '{LETTERS[i]}.', "
                                        f"got {o!r}")
                    texts.append(m.group(2).strip())
                rows.append(make_row(where, **common, options=texts, answer=str(gt).strip(),
                                     problem_type="multiple_choice",
                                     meta={**meta, "options_published": options}))
            elif qtype in NA_TYPES:
                if to_float(str(gt)) is None:
                    raise DataError(f"{where}: ground_truth of a numerical question must be a number, got {gt!r}")
                rows.append(make_row(where, **common, answer=str(gt), problem_type="numerical", meta=meta))
            else:
                raise DataError(f"{where}: unknown question_type {qtype!r} (VSI-Bench's: "
                                f"{', '.join(MCA_TYPES + NA_TYPES)})")
        return unique_ids(rows, path)

    def prompt(self, row: VideoRow) -> str:
        if row.problem_type == "numerical":
            return f"{PRE_PROMPT}\n{row.question}\n{NA_POST}"
        options = "Options:\n" + "\n".join(row.meta["options_published"])
        return "\n".join([PRE_PROMPT, row.question, options, MCA_POST])

    def judge(self, text: str, row: VideoRow, mode: str) -> dict[str, Any]:
        numeric = row.problem_type == "numerical"
        if mode == "strict":
            if not numeric:
                pred = extract_choice(text, len(row.options or ()), "strict")
                return {"pred": pred, "score": float(pred == row.answer)}
            tag = extract_tag(text)
            x = None if tag is None else parse_number(tag)
        else:
            word = fuzzy_matching(answer_text(text))
            if not numeric:
                return {"pred": word, "score": float(word.lower() == row.answer.lower())}
            x = to_float(word)
        return {"pred": x, "score": 0.0 if x is None else mra_score(x, float(row.answer))}

    def summarize(self, records: list[dict], mode: str) -> dict[str, Any]:
        per: dict[str, dict[str, float]] = {}
        for qtype in MCA_TYPES + NA_TYPES:
            scores = [r[mode]["score"] for r in records if r["fields"]["question_type"] == qtype]
            if scores:
                per[qtype] = {"n": len(scores), "accuracy" if qtype in MCA_TYPES else "MRA": mean(scores)}
        metric = {k: v.get("accuracy", v.get("MRA")) for k, v in per.items()}
        scores = {k: v for k, v in metric.items() if not k.startswith(DIRECTION + "_")}
        scores[DIRECTION] = sum(metric.get(f"{DIRECTION}_{d}", 0.0) for d in ("easy", "medium", "hard")) / 3
        return {"overall": sum(scores.values()) / len(scores), "scores": scores, "question_type": per}
