"""lmms-eval's own scoring of reelrl's per-sample predictions agrees with reelrl's benchmark adapters.

For Video-MME, MVBench, VSI-Bench, LongVideoBench and MMVU, the fixture records
(tests/fixtures/bench/<name>) become the ``doc`` dicts lmms-eval 0.7.3's
``tasks/<name>/utils.py`` reads, hand-written completions are scored by its
``process_results`` and aggregation functions and by reelrl's adapter in
``benchmark`` mode, and the two must agree per sample and aggregated. lmms-eval
is given the text reelrl's benchmark extraction reads (the last ``<answer>``
tag's content, else the whole completion: :func:`reelrl.eval.bench.base.answer_text`).

Where the adapters deliberately differ (their module docstrings say so), the
agreement is asserted on the samples where the two rules coincide and the
documented difference on a sample that shows it:

- Video-MME: Video-MME's own ``extract_characters_regex`` (reelrl) vs lmms-eval's ``extract_mcq_answer``;
- MVBench: the notebook's ``check_ans`` vs lmms-eval's ``mcq_acc``, and lmms-eval's average leaves empty answers
  out;
- VSI-Bench: numerical answers by ``fuzzy_matching`` vs lmms-eval's ``extract_number`` (first number anywhere);
  lmms-eval's aggregation also needs all three ``object_rel_direction`` difficulties;
- LongVideoBench: no letter is wrong in reelrl, a random choice in lmms-eval;
- MMVU: lmms-eval asks GPT-4o where the open-ended rules fail (reelrl scores 0), and its substring rule counts an
  empty open-ended output right.

lmms-eval is an optional, heavy install and the module is skipped where it is not installed. Its full dependencies
bring torchvision 0.28.0+cu130, which does not load against the CPU torch 2.13.0 (nor do transformers' vision
models then); the task utils need only a few modules (README, "Public benchmarks")::

    pip install --no-deps lmms-eval==0.7.3
    pip install loguru pytz datasets tenacity evaluate sacrebleu opencv-python-headless decord torch==2.13.0

A task whose utils do not import (a missing module, that torchvision) is skipped with the error as its reason. The
utils read only their task yamls at import (no hub, no model: they import the same with ``HF_HUB_OFFLINE=1``), and
MMVU's GPT-4o judge is replaced by one that refuses.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from reelrl.eval.bench import get_benchmark
from reelrl.eval.bench.base import answer_text, read_records
from reelrl.eval.bench.run import record

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install lmms-eval==0.7.3 torch==2.13.0): "
                                        "its scoring is compared only where it installs")

FIXTURES = Path(__file__).parent / "fixtures" / "bench"


def lmms_utils(task: str):
    """``lmms_eval.tasks.<task>.utils``, or a skip naming why it does not import here."""
    try:
        return importlib.import_module(f"lmms_eval.tasks.{task}.utils")
    except Exception as e:  # a missing optional module (decord, cv2, ...) or a broken binary dependency
        pytest.skip(f"lmms-eval's tasks/{task}/utils.py does not import here: {type(e).__name__}: {e} (the module "
                    "docstring names what its utils need)")


def reelrl_records(name: str, completions: dict[str, str], root: Path | None = None) -> dict[str, dict]:
    """reelrl's per-sample records (both judgements) of ``completions`` (id -> text) over the fixture's rows."""
    bench = get_benchmark(name)
    rows = {r.id: r for r in bench.load(root or FIXTURES / name, check_videos=False)}
    return {i: record(bench, rows[i], text, 1) for i, text in completions.items()}


def summary(name: str, recs: dict[str, dict]) -> dict:
    return get_benchmark(name).summarize(list(recs.values()), "benchmark")


def score(recs: dict[str, dict], i: str) -> float:
    return recs[i]["benchmark"]["score"]


# ------------------------------------------------------------------ Video-MME


def videomme_docs() -> dict[str, dict]:
    """The parquet rows are lmms-eval's docs (it loads the same ``lmms-lab/Video-MME`` table)."""
    return {r["question_id"]: r for _, r in read_records(FIXTURES / "videomme/videomme/test-00000-of-00001.parquet")}


VIDEOMME = {
    "001-1": "The best answer is C.",
    "001-2": "<think>it explains the history</think><answer>A</answer>",
    "301-1": "C. He wants to find his dog.",   # wrong in both
    "601-1": "<answer>(D) 4.</answer>",
}
#: (id, completion): the same letter by both extractions
VIDEOMME_SAME = [("001-1", "C"), ("001-1", "B. Candles."), ("001-1", "The answer is (A)"), ("001-1", ""),
                 ("301-1", "(B) He is asked to leave."), ("601-1", "D. 4."), ("601-1", "I am not sure.")]
#: (id, completion, reelrl's letter, lmms-eval's letter): Video-MME's first [ABCD] anywhere vs extract_mcq_answer
VIDEOMME_DIFFERENT = [("301-1", "Answer: B", "A", "B"), ("001-1", "Considering the motion, B", "C", "B"),
                      ("601-1", "I think it's A, no, D", "A", "D")]


def test_videomme_agrees() -> None:
    u = lmms_utils("videomme")
    docs = videomme_docs()

    def lmms(i: str, text: str) -> dict:
        return u.videomme_process_results(docs[i], [answer_text(text)])["videomme_perception_score"]

    recs = reelrl_records("videomme", VIDEOMME)
    results = {i: lmms(i, t) for i, t in VIDEOMME.items()}
    for i in VIDEOMME:
        assert results[i]["score"] == score(recs, i), i
        assert results[i]["pred_answer"] == recs[i]["benchmark"]["pred"], i
    ours = summary("videomme", recs)
    assert u.videomme_aggregate_results(list(results.values())) / 100 == pytest.approx(ours["accuracy"]) == 0.75
    for key, field in (("duration", "duration"), ("domain", "category"), ("task_type", "task_category"),
                       ("sub_category", "sub_category")):
        for group, acc in ours[key].items():
            part = [r for r in results.values() if r[field] == group]
            assert len(part) == acc["n"]
            assert u.videomme_aggregate_results(part) / 100 == pytest.approx(acc["accuracy"]), (key, group)

    for i, text in VIDEOMME_SAME:
        ours = reelrl_records("videomme", {i: text})[i]["benchmark"]
        theirs = lmms(i, text)
        assert (theirs["pred_answer"] or None, theirs["score"]) == (ours["pred"], ours["score"]), text
    for i, text, ours_letter, their_letter in VIDEOMME_DIFFERENT:  # the documented difference
        ours = reelrl_records("videomme", {i: text})[i]["benchmark"]
        theirs = lmms(i, text)
        assert (ours["pred"], theirs["pred_answer"]) == (ours_letter, their_letter), text
        assert ours["score"] != theirs["score"], text


# ------------------------------------------------------------------ MVBench


def mvbench_docs() -> dict[str, dict]:
    """The task files' records are lmms-eval's docs; reelrl's ids are ``<task>-<index>``."""
    docs = {}
    for path in sorted((FIXTURES / "mvbench/json").glob("*.json")):
        for k, (_, rec) in enumerate(read_records(path)):
            docs[f"{path.stem}-{k}"] = rec
    return docs


MVBENCH = {
    "action_sequence-0": "A) Ate the medicine.",
    "action_sequence-1": "(C) Threw the clothes.",
    "moving_count-0": "<answer>C</answer>",
    "moving_count-1": "<think>none move</think><answer>A</answer>",
    "moving_count-2": "(A) 3",
}
MVBENCH_SAME = [("action_sequence-0", "(A)"), ("action_sequence-0", "A."), ("action_sequence-0", "a"),
                ("action_sequence-0", "B"), ("action_sequence-1", "(C) Threw the clothes.\nBecause ..."),
                ("moving_count-2", "B")]
#: (id, completion, reelrl's score, lmms-eval's score): check_ans on "(" + the first token vs mcq_acc's letter
MVBENCH_DIFFERENT = [("moving_count-0", "Best option: (C)", 0.0, 1), ("action_sequence-0", "The answer is A", 0.0, 1)]


def test_mvbench_agrees() -> None:
    u = lmms_utils("mvbench")
    docs = mvbench_docs()

    def lmms(i: str, text: str) -> dict:
        return u.mvbench_process_results(docs[i], [answer_text(text)])["mvbench_accuracy"]

    recs = reelrl_records("mvbench", MVBENCH)
    results = {i: lmms(i, t) for i, t in MVBENCH.items()}
    for i in MVBENCH:
        assert results[i]["score"] == score(recs, i), i
        assert results[i]["gt_answer"] == recs[i]["answer"], i
    ours = summary("mvbench", recs)
    assert u.mvbench_aggregate_results(list(results.values())) / 100 == pytest.approx(ours["Avg"]) == 0.8
    for task, acc in ours["task"].items():  # lmms-eval scores each task as its own subtask
        part = [results[i] for i in MVBENCH if i.rsplit("-", 1)[0] == task]
        assert u.mvbench_aggregate_results(part) / 100 == pytest.approx(acc["accuracy"]), task

    for i, text in MVBENCH_SAME:
        assert lmms(i, text)["score"] == reelrl_records("mvbench", {i: text})[i]["benchmark"]["score"], text
    for i, text, ours_score, their_score in MVBENCH_DIFFERENT:  # the documented difference (mcq_acc)
        assert reelrl_records("mvbench", {i: text})[i]["benchmark"]["score"] == ours_score, text
        assert lmms(i, text)["score"] == their_score, text
    # an empty answer: wrong in both, but lmms-eval's average leaves it out of the denominator
    recs["moving_count-2"] = reelrl_records("mvbench", {"moving_count-2": ""})["moving_count-2"]
    results["moving_count-2"] = lmms("moving_count-2", "")
    assert results["moving_count-2"]["score"] == score(recs, "moving_count-2") == 0
    assert summary("mvbench", recs)["Avg"] == pytest.approx(4 / 5)
    assert u.mvbench_aggregate_results(list(results.values())) == pytest.approx(100.0)


# ------------------------------------------------------------------ VSI-Bench


def vsibench_docs(path: Path) -> dict[str, dict]:
    return {str(r["id"]): r for _, r in read_records(path)}


VSIBENCH = {
    "0": "<answer>6</answer>",   # gt 4: error 0.5, on the 0.50 threshold -> MRA 0.1 in both
    "1": "150 centimeters",      # the first word and the first number coincide -> 0.9
    "2": "A.",
    "3": "<answer>C</answer>",
    "4": "The answer is D",      # first word "The": wrong in both (MCA uses fuzzy_matching in lmms-eval too)
    "5": "21",
}
VSIBENCH_SAME = [("0", "4 chairs"), ("0", "7"), ("1", "160"), ("2", "b"), ("5", "")]
#: (id, completion, reelrl's score, lmms-eval's score): fuzzy_matching's first word vs extract_number
VSIBENCH_DIFFERENT = [("5", "about 20 square meters", 0.0, 1.0), ("0", "four", 0.0, 1.0), ("1", "1.5e2", 0.9, 0.0)]


def test_vsibench_agrees(tmp_path) -> None:
    u = lmms_utils("vsibench")
    MRA = "MRA:.5:.95:.05"

    def lmms(docs: dict, i: str, text: str) -> dict:
        doc = u.vsibench_process_results(dict(docs[i]), [answer_text(text)])["vsibench_overall"]
        return doc.get("accuracy", doc.get(MRA))

    docs = vsibench_docs(FIXTURES / "vsibench/test.jsonl")
    recs = reelrl_records("vsibench", VSIBENCH)
    for i, text in VSIBENCH.items():
        assert lmms(docs, i, text) == pytest.approx(score(recs, i), abs=1e-12), i
    # the fixture has no object_rel_direction_hard question: reelrl counts it 0 (the thinking-in-space
    # reference's pop(..., 0.)); lmms-eval 0.7.3 pops without a default and fails
    with pytest.raises(KeyError, match="object_rel_direction_hard"):
        u.vsibench_aggregate_results([u.vsibench_process_results(dict(docs[i]), [answer_text(t)])["vsibench_overall"]
                                      for i, t in VSIBENCH.items()])
    # with all three difficulties the aggregations agree: the fixture plus a hard question
    root = tmp_path / "vsibench"
    root.mkdir()
    text = (FIXTURES / "vsibench/test.jsonl").read_text()
    hard = ('{"id": 6, "dataset": "scannet", "scene_name": "scene0015_00", "question_type": '
            '"object_rel_direction_hard", "question": "If I am standing by the bed and facing the door, is the desk '
            'to my front-left, front-right, back-left, or back-right?", "options": ["A. front-left", '
            '"B. front-right", "C. back-left", "D. back-right"], "ground_truth": "B"}\n')
    (root / "test.jsonl").write_text(text + hard)
    docs = vsibench_docs(root / "test.jsonl")
    completions = {**VSIBENCH, "6": "A"}
    recs = reelrl_records("vsibench", completions, root)
    results = [u.vsibench_process_results(dict(docs[i]), [answer_text(t)])["vsibench_overall"]
               for i, t in completions.items()]
    ours = summary("vsibench", recs)
    assert u.vsibench_aggregate_overall(results) == pytest.approx(ours["overall"], abs=1e-6)
    assert u.vsibench_aggregate_object_rel_direction_accuracy(results) == pytest.approx(
        ours["scores"]["object_rel_direction"], abs=1e-6) == pytest.approx(2 / 3, abs=1e-6)
    assert u.vsibench_aggregate_object_counting_mra(results) == pytest.approx(ours["scores"]["object_counting"],
                                                                              abs=1e-6)
    assert u.vsibench_aggregate_object_size_estimation_mra(results) == pytest.approx(
        ours["scores"]["object_size_estimation"], abs=1e-6)
    assert u.vsibench_aggregate_room_size_estimation_mra(results) == pytest.approx(
        ours["scores"]["room_size_estimation"], abs=1e-6)
    assert u.vsibench_aggregate_route_planning_accuracy(results) == ours["scores"]["route_planning"] == 0.0

    for i, text in VSIBENCH_SAME:
        ours_score = reelrl_records("vsibench", {i: text})[i]["benchmark"]["score"]
        assert lmms(docs, i, text) == pytest.approx(ours_score, abs=1e-12), text
    for i, text, ours_score, their_score in VSIBENCH_DIFFERENT:  # the documented difference (extract_number)
        assert reelrl_records("vsibench", {i: text})[i]["benchmark"]["score"] == pytest.approx(ours_score), text
        assert lmms(docs, i, text) == pytest.approx(their_score), text


# ------------------------------------------------------------------ LongVideoBench


def longvideobench_docs() -> dict[str, dict]:
    """lmms-eval reads the parquet export: ``option0``..``option4``, "N/A" past the last candidate."""
    docs = {}
    for _, rec in read_records(FIXTURES / "longvideobench/lvb_val.json"):
        cands = rec["candidates"]
        docs[rec["id"]] = {**{k: v for k, v in rec.items() if k != "candidates"},
                           **{f"option{k}": cands[k] if k < len(cands) else "N/A" for k in range(5)}}
    return docs


LONGVIDEOBENCH = {
    "86CxyhFV9MI_0": "The best answer is C",
    "86CxyhFV9MI_1": "<answer>E. nothing</answer>",
    "Xq3tPzLp1_0": "Best option: B",
}
LONGVIDEOBENCH_SAME = [("86CxyhFV9MI_0", "D. consider it"), ("86CxyhFV9MI_1", "The answer is (E)"),
                       ("Xq3tPzLp1_0", "<answer>A. red</answer>"), ("Xq3tPzLp1_0", "a red car: A")]


def test_longvideobench_agrees(monkeypatch) -> None:
    u = lmms_utils("longvideobench")
    docs = longvideobench_docs()

    def lmms(i: str, text: str) -> dict:
        return u.longvideobench_process_results(docs[i], [answer_text(text)])["lvb_acc"]

    recs = reelrl_records("longvideobench", LONGVIDEOBENCH)
    results = {i: lmms(i, t) for i, t in LONGVIDEOBENCH.items()}
    for i in LONGVIDEOBENCH:
        assert results[i]["parsed_pred"] == recs[i]["benchmark"]["pred"], i
        assert float(results[i]["parsed_pred"] == results[i]["answer"]) == score(recs, i), i
    ours = summary("longvideobench", recs)
    assert u.longvideobench_aggregate_results(list(results.values())) == pytest.approx(ours["accuracy"], abs=1e-5)
    assert ours["accuracy"] == pytest.approx(2 / 3)
    for key in ("duration_group", "question_category"):
        for group, acc in ours[key].items():
            part = [r for r in results.values() if str(r[key]) == group]
            assert u.longvideobench_aggregate_results(part) == pytest.approx(acc["accuracy"], abs=1e-5), group

    for i, text in LONGVIDEOBENCH_SAME:
        assert lmms(i, text)["parsed_pred"] == reelrl_records("longvideobench", {i: text})[i]["benchmark"]["pred"]
    # no letter: reelrl scores it wrong; lmms-eval draws a random choice (here made to draw the right one)
    monkeypatch.setattr(u, "random", SimpleNamespace(choice=lambda choices: choices[-1]))
    ours = reelrl_records("longvideobench", {"86CxyhFV9MI_1": "Nothing."})["86CxyhFV9MI_1"]["benchmark"]
    theirs = lmms("86CxyhFV9MI_1", "Nothing.")
    assert (ours["pred"], ours["score"]) == (None, 0.0)
    assert theirs["parsed_pred"] == theirs["answer"] == "E"


# ------------------------------------------------------------------ MMVU


def mmvu_docs() -> dict[str, dict]:
    """lmms-eval's docs carry ``video_path`` (``videos/<subject>/<n>.mp4``), which names the subject."""
    return {r["id"]: {**r, "video_path": r["video"].split("/resolve/main/", 1)[1]}
            for _, r in read_records(FIXTURES / "mmvu/validation.json")}


CS_MC, CS_OPEN, BIO_MC = ("0af1e1d4-0d2b-4a1c-9bd5-1a1e0a8a7c01", "1b2c3d4e-0000-4000-8000-000000000002",
                          "2c3d4e5f-0000-4000-8000-000000000003")
MMVU = {CS_MC: "It is a merge sort.", CS_OPEN: "<answer>O(n log n)</answer>", BIO_MC: "A"}
MMVU_SAME = [(CS_MC, "B"), (CS_MC, "(b) Merge sort"), (CS_MC, "Quick sort"), (BIO_MC, "mitochondrion"),
             (CS_OPEN, "The complexity is O(n log n)."), (CS_OPEN, "n log n")]


def test_mmvu_agrees(monkeypatch) -> None:
    u = lmms_utils("mmvu")
    judged: list[str] = []

    def no_judge():  # offline: where the rules fail on an open-ended answer, lmms-eval asks GPT-4o
        judged.append("asked")
        raise RuntimeError("no GPT-4o judge offline")

    monkeypatch.setattr(u, "_get_pipeline", no_judge)
    docs = mmvu_docs()

    def lmms(i: str, text: str) -> dict:
        return u.mmvu_process_results(docs[i], [answer_text(text)])["accuracy"]

    recs = reelrl_records("mmvu", MMVU)
    results = {i: lmms(i, t) for i, t in MMVU.items()}
    for i in MMVU:
        assert results[i]["correct"] == score(recs, i), i
        assert results[i]["eval_method"] == "rule-based"
    ours = summary("mmvu", recs)
    assert u.mmvu_aggregate_results_val(list(results.values())) / 100 == pytest.approx(ours["accuracy"])
    assert ours["accuracy"] == pytest.approx(2 / 3)
    for discipline, acc in ours["discipline"].items():
        part = [results[i] for i in MMVU if recs[i]["fields"]["discipline"] == discipline]
        assert u.mmvu_aggregate_results_val(part) / 100 == pytest.approx(acc["accuracy"]), discipline
    assert not judged

    for i, text in MMVU_SAME:
        assert lmms(i, text)["correct"] == reelrl_records("mmvu", {i: text})[i]["benchmark"]["score"], text
    assert not judged
    # the rules fail: reelrl scores 0, lmms-eval asks its judge (here refused, so it keeps the rules' 0)
    assert reelrl_records("mmvu", {CS_OPEN: "linearithmic time"})[CS_OPEN]["benchmark"]["score"] == 0.0
    assert lmms(CS_OPEN, "linearithmic time")["correct"] == 0 and judged == ["asked"]
    # an empty open-ended output: reelrl wrong; lmms-eval's "pred in answer" counts it right
    assert reelrl_records("mmvu", {CS_OPEN: ""})[CS_OPEN]["benchmark"]["score"] == 0.0
    assert lmms(CS_OPEN, "")["correct"] == 1
