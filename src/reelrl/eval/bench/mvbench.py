"""MVBench (Li et al. 2024, arXiv 2311.17005): 20 temporal tasks, 200 multiple-choice questions each.

Published layout (Hugging Face ``OpenGVLab/MVBench``; the videos of its
``video`` revision, which lmms-eval's ``tasks/mvbench`` reads, with the
STAR / STA / TVQA clips already cut to their ``start``-``end`` bounds)::

    ROOT/json/<task>.json                 one list of records per task (20 files)
    ROOT/video/<folder>/<video>           or ROOT/<folder>/<video>; <folder> per task in :data:`VIDEO_FOLDERS`

Record fields: ``video`` (file name), ``question``, ``candidates`` (the
option texts), ``answer`` (the text of the right candidate); STAR, STA and
TVQA records also carry ``start`` / ``end`` (kept in ``meta``; the published
segments are already cut). Sample ids are ``<task>-<index in the file>``.

Prompt: MVBench's own (``video_chat2/mvbench.ipynb`` of OpenGVLab/Ask-Anything,
``infer_mvbench`` with ``system_llm=True``): its system text, then
``Question: <q>\\nOptions:\\n(A) <c>\\n(B) <c>...`` (``qa_template``), then
``\\nOnly give the best option.``, all in the user turn.

Benchmark extraction: the notebook's ``check_ans`` on ``"(" +`` the first line
of the (stripped) output: the first space-separated token, lower-cased and
without ``.``, must be a substring of the gold ``(x)``, or contain it.
Accuracy per task and ``Avg`` = all correct / all questions (``final_res``).

Differences: the notebook also prefills the assistant turn with
``Best option:(``; reelrl does not prefill (the prompt ends with the user
turn), so the return prefix ``(`` is still prepended, as the notebook does. An
empty output scores 0 (the notebook's ``"(" in "(a)"`` would count it right).
lmms-eval's variant (``Question:<q>\\nOption:\\n...``, ``mcq_acc``, and an
average that leaves out empty answers) is not followed.
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
    make_row,
    mean,
    read_records,
    require,
    resolve_video,
)
from reelrl.eval.bench.registry import BENCHMARKS

SYSTEM = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
          "movement of objects, and the action and pose of persons. Based on your observations, select the best "
          "option that accurately addresses the question.\n")
QUESTION_PROMPT = "\nOnly give the best option."

#: task -> video folder (lmms-eval ``tasks/mvbench/utils.py`` ``DATA_LIST``, the ``video`` revision's layout)
VIDEO_FOLDERS: dict[str, str] = {
    "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment",
    "action_antonym": "ssv2_video_mp4",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test",
    "object_existence": "clevrer/video_validation",
    "object_interaction": "star/Charades_segment",
    "object_shuffle": "perception/videos",
    "moving_direction": "clevrer/video_validation",
    "action_localization": "sta/sta_video_segment",
    "scene_transition": "scene_qa/video",
    "action_count": "perception/videos",
    "moving_count": "clevrer/video_validation",
    "moving_attribute": "clevrer/video_validation",
    "state_change": "perception/videos",
    "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "counterfactual_inference": "clevrer/video_validation",
}


def check_ans(pred: str, gt: str) -> bool:
    """MVBench's ``check_ans``: ``pred`` (with the return prefix) against ``gt`` = ``"(X) answer text"``."""
    pred_option = pred.lower().split(" ")[0]
    gt_option = gt.lower().split(" ")[0]
    return pred_option.replace(".", "") in gt_option or gt_option in pred_option


@BENCHMARKS.register("mvbench")
class MVBench(Benchmark):
    name = "mvbench"
    title = "MVBench"
    layout = "json/<task>.json, video/<folder>/<video>"
    source = "Ask-Anything video_chat2/mvbench.ipynb"

    def load(self, root: Path, annotations: Path | None = None, check_videos: bool = True) -> list[VideoRow]:
        if annotations is not None:
            files = [annotations if annotations.is_absolute() else root / annotations]
        else:
            files = [root / "json" / f"{t}.json" for t in VIDEO_FOLDERS if (root / "json" / f"{t}.json").is_file()]
            if not files:
                raise DataError(f"{root}: no MVBench annotation file; looked for {root / 'json'}/<task>.json for "
                                f"the tasks {', '.join(VIDEO_FOLDERS)}")
        rows = []
        for path in files:
            task = path.stem
            if task not in VIDEO_FOLDERS:
                raise DataError(f"{path}: not an MVBench task file (tasks: {', '.join(VIDEO_FOLDERS)})")
            if not path.is_file():
                raise DataError(f"{path}: MVBench annotation file not found")
            folder = VIDEO_FOLDERS[task]
            for i, (where, rec) in enumerate(read_records(path)):
                candidates = require(rec, "candidates", where, list)
                if not 2 <= len(candidates) <= len(LETTERS) or not all(isinstance(c, str) for c in candidates):
                    raise DataError(f"{where}: field 'candidates' must hold 2 or more strings, got {candidates!r}")
                answer = require(rec, "answer", where)
                if answer not in candidates:
                    raise DataError(f"{where}: answer {answer!r} is not one of the candidates {candidates!r}")
                name = require(rec, "video", where)
                video = resolve_video([root / "video" / folder / name, root / folder / name], where, check_videos)
                bounds = {k: rec[k] for k in ("start", "end") if k in rec}
                rows.append(make_row(where, id=f"{task}-{i}", video=str(video),
                                     question=require(rec, "question", where), options=list(candidates),
                                     answer=LETTERS[candidates.index(answer)], problem_type="multiple_choice",
                                     task=task, meta={"bench": self.name, "fields": {"task": task}, **bounds}))
        return rows

    def prompt(self, row: VideoRow) -> str:
        options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(row.options or ()))
        return f"{SYSTEM}Question: {row.question}\nOptions:\n{options}{QUESTION_PROMPT}"

    def judge(self, text: str, row: VideoRow, mode: str) -> dict[str, Any]:
        if mode == "strict":
            pred = extract_choice(text, len(row.options or ()), "strict")
            return {"pred": pred, "score": float(pred == row.answer)}
        lines = answer_text(text).strip().split("\n")
        first = lines[0].strip() if lines else ""
        gt = f"({row.answer}) {row.options[LETTERS.index(row.answer)]}"  # qa_template's answer
        return {"pred": "(" + first, "score": float(bool(first) and check_ans("(" + first, gt))}

    def summarize(self, records: list[dict], mode: str) -> dict[str, Any]:
        return {"Avg": mean([r[mode]["score"] for r in records]), "task": accuracy_by(records, mode, "task")}
