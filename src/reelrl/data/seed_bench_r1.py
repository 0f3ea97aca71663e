"""Import SEED-Bench-R1's annotation files (Chen et al. 2025, arXiv 2503.24376) as reelrl rows.

SEED-Bench-R1 (github.com/TencentARC/SEED-Bench-R1 @ 12e8fcc, data on the
Hugging Face dataset TencentARC/SEED-Bench-R1) ships ``annotations/*.jsonl``
(``infer.py`` also reads a ``.json`` list) in EgoPlan-Bench's record format,
read by ``make_conversation_egoplan`` of ``infer.py`` and
``src/open_r1_egoplan/grpo.py``. Next-action planning: a task-progress video,
then the current-observation image, then a 4-option question.

Validation levels (``validation_L1.jsonl`` in-distribution, ``validation_L2``
cross-environment, ``validation_L3`` cross-environment-task)::

    {"sample_id": 115, "video_source": "EpicKitchens", "video_basename": "...mp4",
     "current_observation_basename": "...png", "task_goal": "store cereal",
     "question": "Considering the progress shown in the video ..., what action should I take next ...?",
     "choice_a": "...", "choice_b": "...", "choice_c": "...", "choice_d": "...",
     "golden_choice_idx": "A", "answer": "put cereal box into cupboard",
     "current_observation_frame": 760, "task_progress_metadata": [{"narration_text": ..., ...}, ...]}

Training (``training_6k.jsonl``): the same without ``choice_*`` /
``golden_choice_idx``, with ``negative_answers`` (a list of wrong next
actions); SEED-Bench-R1 draws 3 of them per epoch and shuffles the 4 options.
``sample_id`` falls back to ``id`` (as ``infer.py`` does).

Conversion to :class:`~reelrl.data.schema.VideoRow` (``multiple_choice``):

* ``id``       = ``"<level>-<sample_id>"``;
* ``video``    = ``data_root/videos/<video_source>/<video_basename>``, absolute (checked only when asked);
* ``question`` = the record's question; ``options`` = the 4 choices (reelrl lists them as "A. text" lines,
  as SEED-Bench-R1's prompt does);
* ``answer``   = ``golden_choice_idx``; it must name the choice equal to ``answer`` when both are given.
  Training records: 3 negatives drawn and the 4 options shuffled once, at conversion, from
  ``SeedSequence(seed, spawn_key=(record index,))`` (deviation: SEED-Bench-R1 redraws them every epoch);
* ``task``     = the level (``L1`` / ``L2`` / ``L3``, read from the file name unless given; ``train`` for
  training files), so evaluation reports accuracy per level;
* ``meta``     = ``level``, ``sample_id``, ``video_source``, ``video_basename``, ``task_goal``,
  ``current_observation`` (absolute path of ``data_root/images/<video_source>/<current_observation_basename>``),
  ``current_observation_frame`` and the narrations of ``task_progress_metadata``.

The current-observation image: a reelrl row holds one video, so reelrl does not show the image to the
model; its path stays in ``meta["current_observation"]`` (append it as the video's last frame when
re-encoding the videos to show it). Records with an empty ``task_progress_metadata`` have no video in
SEED-Bench-R1 (the image alone is the input); they are skipped and counted (``no_video``).
Malformed records (not an object, a field missing or of the wrong type, an empty choice, a
``golden_choice_idx`` outside A-D or naming another choice than ``answer``, fewer than 3 negatives
distinct from the answer) raise a :class:`~reelrl.data.schema.DataError` naming the file and record.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from reelrl.data.records import read_records
from reelrl.data.schema import LETTERS, DataError, VideoRow, video_path_problem, write_jsonl

__all__ = ["read_seed_bench_r1", "convert_seed_bench_r1", "level_of"]

CHOICES = ("choice_a", "choice_b", "choice_c", "choice_d")


def level_of(path: str | Path) -> str:
    """``L1`` / ``L2`` / ``L3`` from a file name like ``validation_L2.jsonl``; ``train`` otherwise."""
    m = re.search(r"(?:^|[_\-])(L[123])(?:[_\-.]|$)", Path(path).name)
    return m.group(1) if m else "train"


def _text(rec: dict, key: str, where: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _options(rec: dict, where: str, rng: np.random.Generator) -> tuple[list[str], str]:
    """The 4 options and the gold letter of a validation (``choice_*``) or training (``negative_answers``) record."""
    if "golden_choice_idx" in rec:
        options = [_text(rec, k, where) for k in CHOICES]
        letter = rec["golden_choice_idx"]
        if not isinstance(letter, str) or letter.strip() not in LETTERS[:4]:
            raise DataError(f"{where}: golden_choice_idx must be one of A, B, C, D, got {letter!r}")
        letter = letter.strip()
        if "answer" in rec and _text(rec, "answer", where) != options[LETTERS.index(letter)]:
            raise DataError(f"{where}: golden_choice_idx {letter} is {options[LETTERS.index(letter)]!r} but "
                            f"answer is {rec['answer']!r}")
        return options, letter
    answer = _text(rec, "answer", where)
    negs = rec.get("negative_answers")
    if not isinstance(negs, list) or not all(isinstance(x, str) for x in negs):
        raise DataError(f"{where}: needs choice_a..choice_d with golden_choice_idx, or negative_answers "
                        f"(a list of strings), got negative_answers={negs!r}")
    pool = list(dict.fromkeys(x.strip() for x in negs if x.strip() and x.strip() != answer))
    if len(pool) < 3:
        raise DataError(f"{where}: negative_answers has {len(pool)} distinct wrong answers; 3 are needed")
    chosen = [pool[i] for i in rng.choice(len(pool), size=3, replace=False)]
    options = [*chosen, answer]
    options = [options[i] for i in rng.permutation(4)]
    return options, LETTERS[options.index(answer)]


def read_seed_bench_r1(
    path: str | Path, data_root: str | Path, level: str | None = None, seed: int = 0, check_videos: bool = False,
) -> tuple[list[VideoRow], dict[str, int]]:
    """Rows of one SEED-Bench-R1 annotation file (module docstring) and counts ``{"rows", "no_video"}``."""
    path, root = Path(path), Path(data_root).absolute()
    level = level or level_of(path)
    rows: list[VideoRow] = []
    no_video = 0
    seen: set[str] = set()
    for index, (where, rec) in enumerate(read_records(path)):
        if not isinstance(rec, dict):
            raise DataError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
        sid = rec.get("sample_id", rec.get("id"))
        if not isinstance(sid, (int, str)) or isinstance(sid, bool) or str(sid) == "":
            raise DataError(f"{where}: needs a sample_id (or id), got {sid!r}")
        where = f"{where} (sample_id {sid})"
        if str(sid) in seen:
            raise DataError(f"{where}: sample_id repeats an earlier record")
        seen.add(str(sid))
        progress = rec.get("task_progress_metadata")
        if not isinstance(progress, list):
            raise DataError(f"{where}: task_progress_metadata must be a list, got {progress!r}")
        source = _text(rec, "video_source", where)
        image = root / "images" / source / _text(rec, "current_observation_basename", where)
        question = _text(rec, "question", where)
        options, letter = _options(rec, where, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,))))
        if not progress:
            no_video += 1
            continue
        video = root / "videos" / source / _text(rec, "video_basename", where)
        if check_videos and (problem := video_path_problem(video)):
            raise DataError(f"{where}: {problem}: {video}")
        narrations = [p.get("narration_text") if isinstance(p, dict) else None for p in progress]
        meta = {"level": level, "sample_id": sid, "video_source": source, "video_basename": rec["video_basename"],
                "task_goal": rec.get("task_goal"), "current_observation": str(image),
                "current_observation_frame": rec.get("current_observation_frame"), "task_progress": narrations}
        try:
            rows.append(VideoRow(id=f"{level}-{sid}", video=str(video), question=question, options=options,
                                 answer=letter, problem_type="multiple_choice", task=level, meta=meta))
        except ValidationError as e:
            raise DataError(f"{where}: invalid row: {e.errors()[0]['msg']}") from None
    return rows, {"rows": len(rows), "no_video": no_video}


def convert_seed_bench_r1(
    src: str | Path, data_root: str | Path, out: str | Path, level: str | None = None, seed: int = 0,
    check_videos: bool = False,
) -> dict[str, int]:
    """Read ``src``, write its rows to ``out`` as JSONL; returns the counts."""
    rows, counts = read_seed_bench_r1(src, data_root, level, seed, check_videos)
    write_jsonl(rows, out)
    return counts
