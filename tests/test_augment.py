"""Tests for frame transforms (video/transforms.py) and row augmentation (data/augment.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from reelrl.data.augment import (
    NO_AUGMENT,
    ReplayDifficulty,
    difficulty_augmentation,
    hint_prefix_words,
    invert_question,
    negate_question_sentence,
    qa_inversion,
)
from reelrl.data.schema import LETTERS, VideoRow
from reelrl.video.transforms import (
    gaussian_noise,
    mask_frames,
    mask_span,
    n_masked,
    shuffle_frames,
)

OPTIONS = ["red", "blue", "green", "yellow"]


def mc_row(question: str = "Which way does the red ball move?", answer: str = "B", **kw) -> VideoRow:
    return VideoRow(
        id="r1",
        video="v.mp4",
        question=question,
        options=kw.pop("options", OPTIONS),
        answer=answer,
        problem_type=kw.pop("problem_type", "multiple_choice"),
        reasoning=kw.pop("reasoning", "<think>It rolls.</think>"),
        meta=kw.pop("meta", {"seed": 3}),
        **kw,
    )


def indexed_frames(t: int, h: int = 2, w: int = 3) -> np.ndarray:
    """Frame i is filled with the value i + 1 (so 0 is never a frame value)."""
    return np.broadcast_to((np.arange(t, dtype=np.uint8) + 1)[:, None, None, None], (t, h, w, 3)).copy()  # [T, H, W, 3]


# --------------------------------------------------------------------------- frame transforms


@pytest.mark.parametrize("t", [2, 3, 5, 8])
def test_shuffle_is_a_non_identity_permutation(t: int) -> None:
    frames = indexed_frames(t)
    before = frames.copy()
    for seed in range(40):
        out = shuffle_frames(frames, np.random.default_rng(seed))
        order = out[:, 0, 0, 0].astype(int) - 1  # [T] source index of each output frame
        assert sorted(order.tolist()) == list(range(t))
        assert order.tolist() != list(range(t))
        assert np.array_equal(out, frames[order])
    assert np.array_equal(frames, before)  # input untouched


def test_shuffle_single_frame_and_determinism() -> None:
    one = indexed_frames(1)
    assert np.array_equal(shuffle_frames(one, np.random.default_rng(0)), one)
    f = indexed_frames(6)
    a = shuffle_frames(f, np.random.default_rng(7))
    b = shuffle_frames(f, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_gaussian_noise_statistics_and_clipping() -> None:
    gray = np.full((8, 32, 32, 3), 128, dtype=np.uint8)
    out = gaussian_noise(gray, 10.0, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == gray.shape
    diff = out.astype(np.float64) - 128.0
    assert abs(diff.mean()) < 0.2
    assert abs(diff.std() - 10.0) < 0.2  # rounding adds variance 1/12: sqrt(100.083) = 10.004
    white = np.full((4, 16, 16, 3), 255, dtype=np.uint8)
    w = gaussian_noise(white, 50.0, np.random.default_rng(1))
    assert w.max() == 255 and w.mean() < 240  # clipped at the top, pulled down
    assert np.array_equal(gaussian_noise(gray, 0.0, np.random.default_rng(2)), gray)
    with pytest.raises(ValueError, match="gaussian_noise: sigma"):
        gaussian_noise(gray, -1.0, np.random.default_rng(0))


def test_n_masked_rounding() -> None:
    assert n_masked(10, 0.25) == 3  # 2.5 rounds half up
    assert n_masked(8, 0.25) == 2
    assert n_masked(10, 0.0) == 0
    assert n_masked(10, 1.0) == 10
    assert n_masked(3, 0.1) == 0


@pytest.mark.parametrize("frac,expected", [(0.5, 5), (0.25, 3), (0.0, 0), (1.0, 10)])
def test_mask_frames_blanks_exactly_n_whole_frames(frac: float, expected: int) -> None:
    frames = indexed_frames(10)
    out = mask_frames(frames, frac, np.random.default_rng(3), fill=0)
    blank = np.all(out == 0, axis=(1, 2, 3))  # [T]
    assert int(blank.sum()) == expected
    assert np.array_equal(out[~blank], frames[~blank])  # the others are untouched


def test_mask_span_blanks_frames_with_centre_in_span() -> None:
    frames = indexed_frames(10)
    out = mask_span(frames, 0.2, 0.5, fill=255)
    blank = np.all(out == 255, axis=(1, 2, 3))  # [T]
    assert np.flatnonzero(blank).tolist() == [2, 3, 4]  # centres 0.25, 0.35, 0.45
    assert np.array_equal(out[~blank], frames[~blank])
    assert np.array_equal(mask_span(frames, 0.3, 0.3), frames)
    assert np.flatnonzero(np.all(mask_span(frames, 0.0, 1.0) == 0, axis=(1, 2, 3))).tolist() == list(range(10))
    with pytest.raises(ValueError, match="end_frac"):
        mask_span(frames, 0.6, 0.2)


def test_transforms_reject_bad_frames() -> None:
    with pytest.raises(ValueError, match="mask_frames: frames must be uint8"):
        mask_frames(np.zeros((2, 2, 2, 3), dtype=np.float32), 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"shuffle_frames: frames must have shape \[T, H, W, 3\]"):
        shuffle_frames(np.zeros((2, 2, 3), dtype=np.uint8), np.random.default_rng(0))


# --------------------------------------------------------------------------- QA inversion


@pytest.mark.parametrize(
    "question,expected,rule",
    [
        ("Which way does the red ball move?", "Which way doesn't the red ball move?", "auxiliary"),
        ("What colour is the square before it changes?", "What colour isn't the square before it changes?", "auxiliary"),
        ("Which object was hit first?", "Which object wasn't hit first?", "auxiliary"),
        ("Who would win the race?", "Who wouldn't win the race?", "auxiliary"),
        ("What will happen next?", "What won't happen next?", "auxiliary"),
        ("What did the man pick up?", "What didn't the man pick up?", "auxiliary"),
        ("What happened after the collision?", "What didn't happen after the collision?", "happen"),
        ("What happens to the cube?", "What doesn't happen to the cube?", "happen"),
        (
            "Which colour appears first?",
            'Which of the following is NOT a correct answer to the question "Which colour appears first"?',
            "generic",
        ),
        (
            "How many times does the square flash?",
            'Which of the following is NOT a correct answer to the question "How many times does the square flash"?',
            "quantity",
        ),
        (
            "Why did the ball stop?",
            'Which of the following is NOT a correct answer to the question "Why did the ball stop"?',
            "generic",
        ),
    ],
)
def test_negate_question_rules(question: str, expected: str, rule: str) -> None:
    assert negate_question_sentence(question) == (expected, rule)


def test_inversion_keeps_context_and_trailing_instructions() -> None:
    row = mc_row("The ball rolls. Which way does it move? Answer with a letter.")
    inv = invert_question(row, np.random.default_rng(0))
    assert inv is not None
    assert inv.question == "The ball rolls. Which way doesn't it move? Select all that apply. Answer with a letter."


def check_inversion(row: VideoRow, inv: VideoRow) -> int:
    """Assert the structural rules of an inversion; return the number of kept distractors."""
    old_correct = row.options[LETTERS.index(row.answer)]
    distractors = [o for o in row.options if o != old_correct]
    assert inv.problem_type == "multi_choice"
    assert inv.id == f"{row.id}-inv"
    assert inv.reasoning is None
    assert old_correct in inv.options
    wrong_letter = LETTERS[inv.options.index(old_correct)]
    letters = inv.answer.split(",")
    assert letters == sorted(letters)
    assert wrong_letter not in letters
    # every other option is an old distractor and is a correct answer
    assert set(letters) == {LETTERS[j] for j in range(len(inv.options))} - {wrong_letter}
    kept = [o for o in inv.options if o != old_correct]
    assert set(kept) <= set(distractors) and len(set(kept)) == len(kept)
    assert 1 <= len(kept) <= len(distractors)
    m = inv.meta["qa_inversion"]
    assert m["source_id"] == row.id and m["original_answer"] == old_correct and m["kept"] == len(kept)
    assert inv.meta["seed"] == 3  # original meta carried along
    return len(kept)


def test_inversion_structure_and_distribution_over_seeds() -> None:
    row = mc_row(answer="C")
    ks = Counter()
    wrong_positions = Counter()
    for seed in range(300):
        inv = invert_question(row, np.random.default_rng(seed))
        assert inv is not None
        ks[check_inversion(row, inv)] += 1
        wrong_positions[inv.options.index("green")] += 1
    assert set(ks) == {1, 2, 3}  # k ~ U{1..3}: each about 100 of 300
    assert all(70 <= c <= 130 for c in ks.values()), ks
    assert len(wrong_positions) == 4  # shuffled: the wrong option lands at every position


def test_inversion_handcomputed_answer_letters() -> None:
    """Two options: k must be 1, the result is the pair in some order, answer = the distractor's letter."""
    row = mc_row(options=["yes", "no"], answer="A", question="What is the ball doing?")
    seen = set()
    for seed in range(20):
        inv = invert_question(row, np.random.default_rng(seed))
        assert inv is not None and sorted(inv.options) == ["no", "yes"]
        assert inv.answer == ("B" if inv.options == ["yes", "no"] else "A")
        seen.add(tuple(inv.options))
    assert seen == {("yes", "no"), ("no", "yes")}


def test_inversion_deterministic_with_seed() -> None:
    row = mc_row()
    a = invert_question(row, np.random.default_rng(11))
    b = invert_question(row, np.random.default_rng(11))
    assert a == b
    others = {invert_question(row, np.random.default_rng(s)).model_dump_json() for s in range(10)}
    assert len(others) > 1


@pytest.mark.parametrize(
    "row",
    [
        mc_row("Which object did not move?"),
        mc_row("Which ball isn't red?"),
        mc_row("Select the colour of the ball."),
        mc_row(answer="A,C", problem_type="multi_choice"),
        VideoRow(id="n", video="v.mp4", question="How many?", answer="3", problem_type="numerical"),
    ],
)
def test_inversion_not_applicable(row: VideoRow) -> None:
    assert invert_question(row, np.random.default_rng(0)) is None


def test_qa_inversion_row_transform_probability() -> None:
    fn = qa_inversion
    row = mc_row()
    assert fn(row, np.random.default_rng(0), p=0.0) is row
    assert fn(row, np.random.default_rng(0), p=1.0).id == "r1-inv"
    neg = mc_row("Which object did not move?")
    assert fn(neg, np.random.default_rng(0), p=1.0) is neg
    rng = np.random.default_rng(4)
    n_inv = sum(fn(row, rng, p=0.3).id.endswith("-inv") for _ in range(1000))
    assert 250 <= n_inv <= 350


# --------------------------------------------------------------------------- DeepVideo-R1


def test_replay_difficulty_gap_by_hand() -> None:
    rd = ReplayDifficulty(window=3)
    assert rd.gap(0.7) == 0.0  # empty buffer: no evidence
    rd.observe([1.0, 0.0])
    assert rd.gap(0.5) == pytest.approx(0.0)
    rd.observe([2.0, 4.0])  # buffer is now [0, 2, 4] (1.0 fell out), mean 2
    assert len(rd) == 3
    assert rd.gap(1.0) == pytest.approx(1.0)  # harder than recent samples
    assert rd.gap(3.0) == pytest.approx(-1.0)  # easier
    other = ReplayDifficulty(window=3)
    other.load_state_dict(rd.state_dict())
    assert other.gap(1.0) == pytest.approx(1.0)
    other.observe([5.0])  # [2, 4, 5]
    assert other.gap(0.0) == pytest.approx(11 / 3)
    with pytest.raises(ValueError, match="window"):
        ReplayDifficulty(window=5).load_state_dict(rd.state_dict())
    with pytest.raises(ValueError, match="finite"):
        rd.observe([float("nan")])


def gray_frames() -> np.ndarray:
    return np.full((6, 32, 32, 3), 128, dtype=np.uint8)  # [T, H, W, 3]


def test_easy_sample_gets_noise_with_handcomputed_sigma() -> None:
    row = mc_row()
    plan = difficulty_augmentation(row, -0.1, np.random.default_rng(0), noise_max_sigma=32.0, scale=0.5, levels=20)
    assert plan.kind == "noise" and plan.hint is None and plan.frame_transform is not None
    assert plan.strength == pytest.approx(0.2)  # |dR| / scale = 0.2 -> level 4 of 20
    out = plan.frame_transform(gray_frames())
    assert abs((out.astype(float) - 128).std() - 6.4) < 0.15  # sigma = 32 * 0.2
    assert np.array_equal(out, plan.frame_transform(gray_frames()))  # the seed is bound in the plan
    assert plan.variant.startswith("noise(level=4/20,sigma=6.4")


def test_strength_monotone_in_gap_and_saturates() -> None:
    row = mc_row()
    gaps = [0.01, 0.05, 0.1, 0.2, 0.3, 0.49, 0.5, 0.8, 2.0]
    sig = []
    for g in gaps:
        plan = difficulty_augmentation(row, -g, np.random.default_rng(0))
        sig.append(plan.strength)
        hint = difficulty_augmentation(row.model_copy(update={"reasoning": " ".join(map(str, range(100)))}), g,
                                       np.random.default_rng(0))
        assert hint.kind == "hint" and hint.strength == plan.strength
    assert sig == sorted(sig) and sig[0] > 0
    assert sig[-3:] == [1.0, 1.0, 1.0]
    # measured noise grows too
    stds = [
        (difficulty_augmentation(row, -g, np.random.default_rng(1)).frame_transform(gray_frames()).astype(float) - 128).std()
        for g in (0.05, 0.2, 0.5)
    ]
    assert stds[0] < stds[1] < stds[2]


def test_hard_sample_gets_hint_prefix() -> None:
    row = mc_row(reasoning="<think>one two three four five six seven eight nine ten</think><answer>B</answer>")
    p = difficulty_augmentation(row, 0.25, np.random.default_rng(0), hint_max_frac=0.5, scale=0.5)
    assert p.kind == "hint" and p.frame_transform is None
    assert p.hint == "Hint: one two three"  # s = 0.5, frac 0.25 of 10 words -> ceil(2.5) = 3
    full = difficulty_augmentation(row, 1.0, np.random.default_rng(0), hint_max_frac=0.5, scale=0.5)
    assert full.hint == "Hint: one two three four five"  # answer tag never leaks
    assert p.variant != full.variant
    given = difficulty_augmentation(row, 1.0, np.random.default_rng(0), trace="alpha beta")
    assert given.hint == "Hint: alpha"  # a passed trace wins over row.reasoning
    assert difficulty_augmentation(mc_row(reasoning=None), 0.5, np.random.default_rng(0)) == NO_AUGMENT
    assert hint_prefix_words("a b c d", 0.5) == "a b"


def test_mask_variant_and_no_augmentation_cases() -> None:
    row = mc_row()
    p = difficulty_augmentation(row, -0.5, np.random.default_rng(0), easy="mask", mask_max_frac=0.5, scale=0.5)
    assert p.kind == "mask"
    out = p.frame_transform(indexed_frames(10))
    assert int(np.all(out == 0, axis=(1, 2, 3)).sum()) == 5  # frac 0.5 of 10 frames
    assert difficulty_augmentation(row, 0.0, np.random.default_rng(0)) == NO_AUGMENT
    assert difficulty_augmentation(row, -0.05, np.random.default_rng(0), min_gap=0.1) == NO_AUGMENT
    a = difficulty_augmentation(row, -0.3, np.random.default_rng(9))
    b = difficulty_augmentation(row, -0.3, np.random.default_rng(9))
    c = difficulty_augmentation(row, -0.3, np.random.default_rng(10))
    assert a.variant == b.variant and a.variant != c.variant  # the variant names the seed
    with pytest.raises(ValueError, match="easy must be"):
        difficulty_augmentation(row, -0.3, np.random.default_rng(0), easy="blur")
