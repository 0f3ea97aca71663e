"""Public benchmark adapters: the published fixtures load, prompts are the benchmarks' own, and the scores of
hand-written completions equal hand computations with each benchmark's official rules."""

from __future__ import annotations

import json

import pytest

from reelrl.data.schema import DataError
from reelrl.eval.bench import BENCHMARKS, get_benchmark
from reelrl.eval.bench.mvbench import check_ans
from reelrl.eval.bench.run import record
from tests.bench_roots import FIXTURES, bench_root


def scores(name: str, tmp_path, completions: dict[str, str]) -> dict:
    """Both summaries of ``completions`` (id -> text) over the fixture's rows, and the records."""
    bench = get_benchmark(name)
    rows = bench.load(bench_root(name, tmp_path))
    assert sorted(r.id for r in rows) == sorted(completions)
    recs = [record(bench, r, completions[r.id], 1) for r in rows]
    return {"strict": bench.summarize(recs, "strict"), "benchmark": bench.summarize(recs, "benchmark"),
            "records": {r["id"]: r for r in recs}}


def test_registry_names_every_benchmark() -> None:
    assert sorted(BENCHMARKS._items) == ["clevrer", "longvideobench", "mmvu", "mvbench", "video_holmes",
                                         "videomme", "vsibench"]
    with pytest.raises(KeyError, match="valid names: clevrer"):
        get_benchmark("nope")


def test_videomme(tmp_path) -> None:
    out = scores("videomme", tmp_path, {
        "001-1": "The best answer is C.",                                     # prefix removed -> C
        "001-2": "<think>it explains the history</think><answer>A</answer>",  # tag -> A, strict too
        "301-1": "Answer: B",                       # the first of [ABCD] is the A of "Answer": wrong (official)
        "601-1": "<answer>(D) 4.</answer>",         # D both ways
    })
    b, s = out["benchmark"], out["strict"]
    assert b["accuracy"] == 0.75 and s["accuracy"] == 0.5
    assert {k: v["accuracy"] for k, v in b["duration"].items()} == {"short": 1.0, "medium": 0.0, "long": 1.0}
    assert {k: v["accuracy"] for k, v in s["duration"].items()} == {"short": 0.5, "medium": 0.0, "long": 1.0}
    assert b["domain"]["Knowledge"] == {"n": 2, "accuracy": 1.0} and b["domain"]["Film & Television"]["accuracy"] == 0
    assert b["task_type"]["Counting Problem"] == {"n": 2, "accuracy": 1.0}
    assert out["records"]["301-1"]["benchmark"]["pred"] == "A"
    row = get_benchmark("videomme").load(bench_root("videomme", tmp_path / "p"))[0]
    assert get_benchmark("videomme").prompt(row) == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only "
        "the letter (A, B, C, or D) of the correct option.\n" + row.question + "\nA. Apples.\nB. Candles.\n"
        "C. Berries.\nD. The three kinds are of the same number.\nThe best answer is:")


def test_mvbench(tmp_path) -> None:
    out = scores("mvbench", tmp_path, {
        "action_sequence-0": "A) Ate the medicine.",                    # "(a)" in "(a)"
        "action_sequence-1": "(C) Threw the clothes.\nBecause ...",     # "((c)" contains "(c)"
        "moving_count-0": "Best option: (C)",                           # "(best": wrong
        "moving_count-1": "<think>none move</think><answer>A</answer>",
        "moving_count-2": "",                                           # empty: wrong (see the module docstring)
    })
    b, s = out["benchmark"], out["strict"]
    assert b["Avg"] == 3 / 5 and s["Avg"] == 1 / 5
    assert b["task"] == {"action_sequence": {"n": 2, "accuracy": 1.0}, "moving_count": {"n": 3, "accuracy": 1 / 3}}
    assert s["task"]["action_sequence"]["accuracy"] == 0.0
    assert check_ans("(b", "(b) x") and not check_ans("(best", "(c) 1") and check_ans("(", "(a) x")
    rows = get_benchmark("mvbench").load(bench_root("mvbench", tmp_path / "p"))
    assert [r.answer for r in rows] == ["A", "C", "C", "A", "B"] and rows[0].meta["start"] == 13.0
    assert get_benchmark("mvbench").prompt(rows[2]).endswith(
        "question.\nQuestion: How many metal objects enter the scene?\nOptions:\n(A) 2\n(B) 3\n(C) 1\n"
        "Only give the best option.")


def test_vsibench(tmp_path) -> None:
    out = scores("vsibench", tmp_path, {
        "0": "<answer>6</answer>",        # gt 4: error 0.5, exactly on the 0.50 threshold: a hit -> MRA 0.1
        "1": "150 centimeters",           # gt 160: error 0.0625 <= 0.1 ... -> 9 of 10 -> 0.9
        "2": "A.",                        # fuzzy_matching -> A
        "3": "<answer>C</answer>",
        "4": "The answer is D",           # first word "The": wrong
        "5": "about 20 square meters",    # "about" is no number: 0
    })
    b, s = out["benchmark"], out["strict"]
    assert b["scores"]["object_counting"] == pytest.approx(0.1, abs=1e-12)
    assert b["scores"]["object_size_estimation"] == pytest.approx(0.9, abs=1e-12)
    assert b["scores"]["room_size_estimation"] == 0.0 and b["scores"]["route_planning"] == 0.0
    assert b["scores"]["object_rel_direction"] == pytest.approx(2 / 3)  # easy 1, medium 1, hard absent = 0
    assert b["overall"] == pytest.approx((0.1 + 0.9 + 0 + 0 + 2 / 3) / 5)
    assert s["scores"]["object_rel_direction"] == pytest.approx(1 / 3)
    assert s["overall"] == pytest.approx((0.1 + 0 + 0 + 0 + 1 / 3) / 5)
    assert out["records"]["1"]["benchmark"]["pred"] == 150.0
    rows = {r.id: r for r in get_benchmark("vsibench").load(bench_root("vsibench", tmp_path / "p"))}
    assert get_benchmark("vsibench").prompt(rows["2"]) == (
        "These are frames of a video.\n" + rows["2"].question + "\nOptions:\nA. left\nB. right\n"
        "Answer with the option's letter from the given choices directly.")
    assert get_benchmark("vsibench").prompt(rows["0"]) == ("These are frames of a video.\nHow many chair(s) are in "
                                                           "this room?\nPlease answer the question using a single "
                                                           "word or phrase.")


def test_longvideobench(tmp_path) -> None:
    out = scores("longvideobench", tmp_path, {
        "86CxyhFV9MI_0": "The best answer is C",
        "86CxyhFV9MI_1": "Nothing.",                  # no letter: wrong (the reference draws a random one)
        "Xq3tPzLp1_0": "<answer>A. red</answer>",
    })
    b, s = out["benchmark"], out["strict"]
    assert b["accuracy"] == pytest.approx(2 / 3) and s["accuracy"] == pytest.approx(1 / 3)
    assert b["duration_group"] == {"15": {"n": 1, "accuracy": 1.0}, "600": {"n": 2, "accuracy": 0.5}}
    assert b["question_category"] == {"E2O": {"n": 1, "accuracy": 0.0}, "TOS": {"n": 2, "accuracy": 1.0}}
    row = get_benchmark("longvideobench").load(bench_root("longvideobench", tmp_path / "p"))[2]
    assert get_benchmark("longvideobench").prompt(row) == (
        "What color is the car that drives past first?\nA. red\nB. blue\nC. white\nD. black\n"
        "Answer with the option's letter from the given choices directly.\n")


def test_mmvu(tmp_path) -> None:
    out = scores("mmvu", tmp_path, {
        "0af1e1d4-0d2b-4a1c-9bd5-1a1e0a8a7c01": "It is a merge sort.",   # "a" -> A, but the option text occurs
        "1b2c3d4e-0000-4000-8000-000000000002": "<answer>O(n log n)</answer>",
        "2c3d4e5f-0000-4000-8000-000000000003": "A",
    })
    b, s = out["benchmark"], out["strict"]
    assert b["accuracy"] == pytest.approx(2 / 3) and s["accuracy"] == pytest.approx(1 / 3)
    assert b["discipline"] == {"Engineering": {"n": 2, "accuracy": 1.0}, "Science": {"n": 1, "accuracy": 0.0}}
    assert b["question_type"]["open-ended"] == {"n": 1, "accuracy": 1.0}


def test_clevrer(tmp_path) -> None:
    out = scores("clevrer", tmp_path, {
        "10000-0": "3", "10000-1": "Cyan.",
        "10000-2": "A",                    # gold {A, B}: A right, B missed, C right -> 2 of 3 options
        "10000-3": "<answer>B</answer>",   # gold {B}: both options right
        "10001-0": "I am not sure",        # no letters: nothing selected -> 3 of 4 options right
    })
    b, s = out["benchmark"], out["strict"]
    assert b["question_type"] == {
        "descriptive": {"n": 2, "accuracy": 1.0},
        "explanatory": {"n": 1, "per_option": 2 / 3, "per_question": 0.0},
        "predictive": {"n": 1, "per_option": 1.0, "per_question": 1.0},
        "counterfactual": {"n": 1, "per_option": 0.75, "per_question": 0.0}}
    assert b["accuracy"] == pytest.approx(3 / 5)
    assert s["question_type"]["descriptive"]["accuracy"] == 0.0 and s["question_type"]["explanatory"]["per_option"] == 0
    assert s["question_type"]["predictive"]["per_question"] == 1.0 and s["accuracy"] == pytest.approx(1 / 5)


def test_video_holmes(tmp_path) -> None:
    out = scores("video_holmes", tmp_path, {
        "RSmjqss0XKQ_1": "<think>The timer.</think><answer>B</answer>",
        "RSmjqss0XKQ_2": "Based on the clues, C: To find her daughter",   # "C:" in the first pass
        "dGS48Kcax5k_1": "Definitely E",                                  # second pass: the D of "Definitely"
    })
    b, s = out["benchmark"], out["strict"]
    assert b["accuracy"] == pytest.approx(2 / 3) and s["accuracy"] == pytest.approx(1 / 3)
    assert b["question_type"] == {"SR": {"n": 2, "accuracy": 0.5}, "TCI": {"n": 1, "accuracy": 1.0}}
    assert out["records"]["dGS48Kcax5k_1"]["benchmark"]["pred"] == "D"
    row = get_benchmark("video_holmes").load(bench_root("video_holmes", tmp_path / "p"))[2]
    assert get_benchmark("video_holmes").prompt(row).endswith(
        "The question is: What does the red door symbolize?. The options are: A: Danger, B: Hope, C: Memory, "
        "D: Love, E: Death, F: Freedom. Your answer:")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", sorted(FIXTURES.iterdir()))
def test_missing_annotation_file_and_video_are_named(name, tmp_path) -> None:
    bench = get_benchmark(name.name)
    with pytest.raises(DataError, match="annotation file"):
        bench.load(tmp_path / "empty")
    root = bench_root(name.name, tmp_path, videos=False)
    with pytest.raises(DataError, match=r"(record|row|:\d+).*(not found|no such|does not exist|missing)"):
        bench.load(root)
    assert bench.load(root, check_videos=False)  # the annotations themselves are fine


def test_malformed_records_name_file_and_record(tmp_path) -> None:
    root = bench_root("video_holmes", tmp_path)
    path = root / "test_Video-Holmes.json"
    data = json.loads(path.read_text())
    del data[1]["Options"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"test_Video-Holmes.json record 1 \(Question ID RSmjqss0XKQ_2\): field "
                                        r"'Options' is missing"):
        get_benchmark("video_holmes").load(root)
    root = bench_root("vsibench", tmp_path / "v")
    (root / "test.jsonl").write_text('{"id": 0, "dataset": "scannet"\n')
    with pytest.raises(DataError, match=r"test.jsonl:1: malformed JSON"):
        get_benchmark("vsibench").load(root)
    root = bench_root("mvbench", tmp_path / "m")
    recs = json.loads((root / "json/moving_count.json").read_text())
    recs[2]["answer"] = "7"
    (root / "json/moving_count.json").write_text(json.dumps(recs))
    with pytest.raises(DataError, match=r"moving_count.json record 2: answer '7' is not one of the candidates"):
        get_benchmark("mvbench").load(root)
