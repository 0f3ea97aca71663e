"""Tests for row sources (data/curriculum.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from reelrl.data.curriculum import (
    ROW_SOURCES,
    DifficultyCurriculum,
    RowSource,
    irrelevant_spans,
)
from reelrl.data.schema import VideoRow


def make_rows(n: int, difficulty=None, tasks=None, metas=None) -> list[VideoRow]:
    return [
        VideoRow(
            id=f"r{i}",
            video="v.mp4",
            question="q?",
            answer="1",
            problem_type="numerical",
            difficulty=None if difficulty is None else difficulty[i],
            task="default" if tasks is None else tasks[i],
            meta={} if metas is None else metas[i],
        )
        for i in range(n)
    ]


def run(src: RowSource, steps: range, acc_fn=None) -> list[list[int]]:
    """Drive a source: next_batch then observe (accuracy from acc_fn(step, indices), else zeros)."""
    out = []
    for s in steps:
        idx = src.next_batch(s)
        acc = np.zeros((len(idx), 4)) if acc_fn is None else acc_fn(s, idx)  # [B, G]
        src.observe(s, idx, acc, acc.copy())
        out.append(idx)
    return out


def test_registry_names_and_protocol() -> None:
    assert ROW_SOURCES.names() == ["difficulty_curriculum", "filter_all_correct", "staged", "uniform"]
    rows = make_rows(6, difficulty=[0.5] * 6)
    assert isinstance(ROW_SOURCES.get("uniform")(rows, 2, 0), RowSource)
    assert isinstance(ROW_SOURCES.get("difficulty_curriculum")(rows, 2, 0, total_steps=10), RowSource)
    assert isinstance(ROW_SOURCES.get("filter_all_correct")(rows, 2, 0), RowSource)


# --------------------------------------------------------------------------- uniform


def test_uniform_epochs_determinism_and_resume() -> None:
    rows = make_rows(10)
    a = ROW_SOURCES.get("uniform")(rows, 5, seed=3)
    b1, b2 = a.next_batch(0), a.next_batch(1)
    assert sorted(b1 + b2) == list(range(10))  # one epoch = one permutation
    b = ROW_SOURCES.get("uniform")(rows, 5, seed=3)
    assert run(b, range(2)) == [b1, b2]
    assert ROW_SOURCES.get("uniform")(rows, 5, seed=4).next_batch(0) != b1
    # resume mid-epoch: 3 batches of 4 rows of 10 -> cursor 2 of epoch 1
    x = ROW_SOURCES.get("uniform")(rows, 4, seed=1)
    run(x, range(3))
    state = copy.deepcopy(x.state_dict())
    assert (state["epoch"], state["cursor"]) == (1, 2)
    expected = run(x, range(3, 8))
    y = ROW_SOURCES.get("uniform")(rows, 4, seed=1)
    y.load_state_dict(state)
    assert run(y, range(3, 8)) == expected
    with pytest.raises(ValueError, match="seed"):
        ROW_SOURCES.get("uniform")(rows, 4, seed=2).load_state_dict(state)


def test_observe_validates_shapes() -> None:
    src = ROW_SOURCES.get("uniform")(make_rows(4), 2, 0)
    with pytest.raises(ValueError, match="2 indices"):
        src.observe(0, [0, 1], np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="out of range"):
        src.observe(0, [0, 9], np.zeros((2, 4)), np.zeros((2, 4)))


# --------------------------------------------------------------------------- difficulty curriculum


def curriculum_rows() -> list[VideoRow]:
    # difficulty of row i: a fixed shuffle of 0.0 .. 0.9
    diffs = [0.5, 0.1, 0.9, 0.0, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4]
    return make_rows(10, difficulty=diffs)


def test_curriculum_pool_sizes_by_hand() -> None:
    c = DifficultyCurriculum(curriculum_rows(), 2, 0, total_steps=100, start_frac=0.2, pacing="linear")
    assert [c.pool_size(s) for s in (0, 25, 50, 100, 250)] == [2, 4, 6, 10, 10]
    # easiest first: difficulties 0.0 (r3), 0.1 (r1), 0.2 (r7), 0.3 (r5) ...
    assert c.pool(0) == [3, 1]
    assert c.pool(50) == [3, 1, 7, 5, 9, 0]
    r = DifficultyCurriculum(curriculum_rows(), 2, 0, total_steps=100, start_frac=0.2, pacing="root")
    assert [r.pool_size(s) for s in (0, 25, 100)] == [2, 6, 10]  # 0.2 + 0.8 * sqrt(0.25) = 0.6


def test_curriculum_estimates_override_difficulty() -> None:
    rows = curriculum_rows()
    est = {f"r{i}": float(i) for i in range(10)}  # higher = easier: r9 easiest
    c = DifficultyCurriculum(rows, 2, 0, total_steps=10, start_frac=0.3, estimates=est)
    assert c.pool(0) == [9, 8, 7]
    with pytest.raises(ValueError, match="id 'r0'"):
        DifficultyCurriculum(make_rows(3), 2, 0, total_steps=10)


def test_curriculum_admits_harder_rows_over_time() -> None:
    rows = curriculum_rows()
    c = ROW_SOURCES.get("difficulty_curriculum")(rows, 2, 5, total_steps=100, start_frac=0.2)
    batches = run(c, range(0, 101, 10))
    for s, b in zip(range(0, 101, 10), batches):
        assert set(b) <= set(c.pool(s)) and len(set(b)) == 2
    hardest = [max(rows[i].difficulty for i in b) for b in batches]
    assert hardest[0] <= 0.1 and max(hardest[-3:]) >= 0.6


def test_curriculum_determinism_and_resume() -> None:
    mk = lambda: ROW_SOURCES.get("difficulty_curriculum")(curriculum_rows(), 3, 2, total_steps=20)  # noqa: E731
    a = mk()
    first = run(a, range(5))
    state = copy.deepcopy(a.state_dict())
    rest = run(a, range(5, 15))
    b = mk()
    assert run(b, range(5)) == first
    c = mk()
    c.load_state_dict(state)
    assert run(c, range(5, 15)) == rest
    # a second call for the same step (a wrapper's top-up) draws a different batch
    d = mk()
    assert d.next_batch(19) != d.next_batch(19)


def test_mask_schedule() -> None:
    rows = curriculum_rows()
    c = DifficultyCurriculum(rows, 2, 0, total_steps=200, hard_threshold=0.5, mask_max_frac=0.5, unmask_steps=100)
    hard, easy = rows[2], rows[3]  # difficulty 0.9 (easiness 0.1) and 0.0
    assert [c.mask_schedule(s, hard) for s in (0, 50, 100, 150)] == [0.5, 0.25, 0.0, 0.0]
    assert c.mask_schedule(0, easy) == 0.0
    assert c.mask_schedule(0, rows[0]) == 0.0  # difficulty 0.5: easiness 0.5 is not < 0.5


def test_irrelevant_spans() -> None:
    assert irrelevant_spans(0.4, (4.0, 6.0), 10.0) == [(0.0, pytest.approx(0.2)), (pytest.approx(0.8), 1.0)]
    assert irrelevant_spans(0.3, (0.0, 5.0), 10.0) == [(pytest.approx(0.7), 1.0)]
    assert irrelevant_spans(0.9, (2.0, 8.0), 10.0) == [(0.0, pytest.approx(0.2)), (pytest.approx(0.8), 1.0)]
    assert irrelevant_spans(0.0, (2.0, 8.0), 10.0) == []


# --------------------------------------------------------------------------- staged


def staged_rows() -> list[VideoRow]:
    tasks = ["real"] * 4 + ["synth"] * 6
    metas = [{"kind": "physics"}] * 2 + [{"kind": "other"}] * 8
    return make_rows(10, tasks=tasks, metas=metas)


STAGES = [{"name": "real", "steps": 3, "task": "real"}, {"name": "synth", "steps": 2, "task": ["synth"]}]


def test_staged_switches_at_the_right_steps() -> None:
    src = ROW_SOURCES.get("staged")(staged_rows(), 3, 0, stages=STAGES)
    batches = run(src, range(8))
    assert [src.stage_at(s) for s in range(8)] == [0, 0, 0, 1, 1, 1, 1, 1]
    for s, b in enumerate(batches):
        assert set(b) <= (set(range(4)) if s < 3 else set(range(4, 10))), (s, b)
    # the first 4 draws of stage 0 cover its rows: one epoch of the 4 real rows
    assert set(batches[0] + batches[1][:1]) == set(range(4))


def test_staged_meta_filter_and_errors() -> None:
    rows = staged_rows()
    src = ROW_SOURCES.get("staged")(rows, 4, 0, stages=[{"steps": 2, "meta": {"kind": "physics"}}, {"steps": 1}])
    b = run(src, range(3))
    assert set(b[0]) == {0, 1} and set(b[1]) == {0, 1}
    assert src.stage_at(2) == 1
    with pytest.raises(ValueError, match="stage 1 \\(empty\\) matches no row"):
        ROW_SOURCES.get("staged")(rows, 2, 0, stages=[{"steps": 1}, {"name": "empty", "steps": 1, "task": "none"}])
    with pytest.raises(ValueError, match="unknown keys"):
        ROW_SOURCES.get("staged")(rows, 2, 0, stages=[{"steps": 1, "filter": "x"}])


def test_staged_resume_mid_stage() -> None:
    mk = lambda: ROW_SOURCES.get("staged")(staged_rows(), 3, 7, stages=STAGES)  # noqa: E731
    a = mk()
    run(a, range(4))  # into stage 1, mid-epoch
    state = copy.deepcopy(a.state_dict())
    rest = run(a, range(4, 9))
    b = mk()
    b.load_state_dict(state)
    assert run(b, range(4, 9)) == rest


# --------------------------------------------------------------------------- VerIPO filter


def all_correct(step: int, idx: list[int]) -> np.ndarray:
    return np.ones((len(idx), 4))  # [B, G]


def test_filter_drops_about_80_percent_of_all_correct_rows() -> None:
    rows = make_rows(1000)
    f = ROW_SOURCES.get("filter_all_correct")(rows, 1000, 0, drop_frac=0.8)
    run(f, range(1), all_correct)
    # exact seeded set, by the documented rule: row i drops when default_rng([seed, 1, step, i]).random() < 0.8
    expected = {i for i in range(1000) if np.random.default_rng([0, 1, 0, i]).random() < 0.8}
    assert f.dropped == expected and len(expected) == 779
    # binomial sanity: 800 +- 3 sd (38)
    assert 762 <= len(f.dropped) <= 838
    same = ROW_SOURCES.get("filter_all_correct")(rows, 1000, 0, drop_frac=0.8)
    run(same, range(1), all_correct)
    assert same.dropped == f.dropped
    nxt = f.next_batch(1)
    assert not set(nxt) & f.dropped and len(nxt) == 1000  # topped up from the 221 kept rows


def test_filter_never_drops_groups_with_a_wrong_answer() -> None:
    rows = make_rows(50)

    def mixed(step: int, idx: list[int]) -> np.ndarray:
        acc = np.ones((len(idx), 4))  # [B, G]
        acc[[i % 2 == 1 for i in idx], 2] = 0.0  # odd rows have one wrong completion
        return acc

    f = ROW_SOURCES.get("filter_all_correct")(rows, 10, 1, drop_frac=1.0)
    batches = run(f, range(5), mixed)
    assert f.dropped == {i for i in range(50) if i % 2 == 0}
    assert all(i % 2 == 1 for i in f.next_batch(5))
    assert sorted(sum(batches, [])) == list(range(50))  # one epoch before anything was dropped


def test_filter_resume_and_exhaustion() -> None:
    rows = make_rows(30)
    mk = lambda: ROW_SOURCES.get("filter_all_correct")(rows, 4, 2, drop_frac=0.5)  # noqa: E731
    acc = lambda s, idx: np.ones((len(idx), 3))  # noqa: E731
    a = mk()
    run(a, range(6), acc)
    state = copy.deepcopy(a.state_dict())
    rest = run(a, range(6, 12), acc)
    b = mk()
    b.load_state_dict(state)
    assert run(b, range(6, 12), acc) == rest
    c = ROW_SOURCES.get("filter_all_correct")(make_rows(4), 4, 0, drop_frac=1.0)
    run(c, range(1), all_correct)
    with pytest.raises(RuntimeError, match="only dropped rows"):
        c.next_batch(1)


def test_filter_wraps_curriculum() -> None:
    rows = curriculum_rows()
    f = ROW_SOURCES.get("filter_all_correct")(
        rows, 2, 0, inner="difficulty_curriculum", inner_kwargs={"total_steps": 10, "start_frac": 0.4}, drop_frac=1.0
    )
    first = f.next_batch(0)
    f.observe(0, first, np.ones((2, 4)), np.ones((2, 4)))
    assert f.dropped == set(first)
    b = f.next_batch(0)  # same step: the pool of 4 minus the 2 dropped rows
    assert set(b) == set(f.inner.pool(0)) - set(first)


# --------------------------------------------------------------------------- DAPO helpers
