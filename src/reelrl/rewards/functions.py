"""Reward functions, registered by name in :data:`REWARDS`.

Calling convention (TRL's): ``fn(completions, **columns) -> list[float | None]``.
``completions`` holds N completion strings (or TRL conversational completions,
``[{"role": "assistant", "content": "..."}]``, whose last message is scored);
``columns`` holds dataset columns as lists of length N (``answer``,
``problem_type``, ``options``, ``time_span``, ...). Columns a function does not
use are ignored. ``None`` in the result means "not applicable to this row".

Which rows a function applies to:

* ``accuracy`` dispatches on each row's ``problem_type`` (Video-R1 rules,
  algorithms.md "Shared pieces") and never returns ``None``.
* The single-type rewards (``choice``, ``multi_choice``, ``multi_choice_soft``,
  ``numeric``, ``regression``, ``mra``, ``ocr``, ``rouge``, ``tiou``, ``box_iou``) score
  EVERY row they are given with their own rule, whatever its ``problem_type``;
  they need no ``problem_type`` column. Use them on datasets of one type, or
  use ``accuracy`` on mixed ones.

The predicted answer is the text inside the last ``<answer>...</answer>``; a
completion without answer tags, or whose answer cannot be parsed, scores 0.
Gold answers are read as written (a surrounding ``<answer>`` tag is tolerated).

References, and every intended difference from them
----------------------------------------------------
The per-type rules are those of Video-R1's ``accuracy_reward`` and
``format_reward`` (``src/r1-v/src/open_r1/grpo.py``); ``mra`` is VSI-Bench's
scorer, ``multi_choice_soft`` TW-GRPO's, ``tiou`` the formula of
algorithms.md (VideoTG-R1).

All types:

* Video-R1 (and TW-GRPO) read the FIRST ``<answer>`` tag (``re.search``);
  reelrl the LAST (as STVG-R1 does). They agree on completions that earn the
  format reward (exactly one tag).
* Video-R1 and TW-GRPO read a conversational completion's FIRST message
  (``completion[0]["content"]``); reelrl its LAST (:func:`_text`). TRL's
  completions are one assistant message, where both are the same.
* Video-R1 applies the type of the batch's first row to every row
  (``kwargs['problem_type'][0]``); ``accuracy`` dispatches per row.
* Video-R1 scores 0 for an unknown type or a gold answer it cannot parse;
  here both raise (they are data errors).
* Missing answer tags: 0, as in Video-R1 (its empty answer scores 0 under
  every type). Evaluation can also read untagged choice answers the way
  official benchmark scripts do: :func:`reelrl.data.answers.extract_choice`.

Per type (``problem_type`` -> reward):

* ``multiple_choice`` (``choice``): Video-R1 needs the answer to equal the
  gold string exactly (``"B"``); here :func:`parse_choice` reads the letter,
  so ``"(B)"``, ``"b"``, ``"B. blue"`` and ``"The answer is B"`` also score 1.
* ``numerical`` (``numeric``): both round to 2 decimals with Python's
  ``round`` and compare, as Video-R1 -- so binary halves go where float64
  puts them (``round(2.675, 2) = 2.67``, ``round(0.125, 2) = 0.12``). Video-R1 parses the WHOLE answer as one float after removing
  commas ("3 apples" scores 0) and scores 0 when exactly one of answer and
  gold contains "." or "," ("3.0" vs "3", "1,000" vs "1000"); here the last
  number in the answer is read (:func:`parse_number`) and only values count.
* ``regression``: Video-R1 computes ``(|p - g| + 1e-9) / (|g| + 1e-9)``,
  clipped to [0, 1], and rewards 1 minus it; here ``|p - g| / |g|`` without
  the epsilons (an exact answer scores exactly 1, not 1 - 1e-9 / |g|), and a
  gold of 0 scores 1 for ``|p| <= 1e-6`` (Video-R1: 0 whatever the answer).
  Numbers are read as for ``numerical``.
* ``ocr``: identical -- ``clip(1 - WER, 0, 1)``, WER = word Levenshtein
  distance (whitespace split, case-sensitive) / ``max(1, reference words)``.
* ``free_form`` (``rouge``): identical -- the ``rouge-score`` package,
  ``RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True)``, mean of
  the three F-measures (:func:`rouge_fmeasures`).
* ``temporal_grounding`` (``tiou``): the algorithms.md formula; a span with
  end <= start scores 0, which the formula also gives wherever it is defined.
* ``box`` (``box_iou``): intersection over union of the last ``[x1, y1,
  x2, y2]`` box of the answer with the gold box (:mod:`reelrl.data.boxes`:
  Qwen2.5-VL's absolute pixel boxes); a box without area scores 0. Scene-R1
  rewards its second stage with this IoU.
* ``spatio_temporal_grounding`` (accuracy only; the ``stvg`` reward of
  :mod:`reelrl.rewards.stvg` trains it): the answer's time range's tIoU when
  its ``Target ID`` is the gold one, else 0 -- HC-STVG's vIoU when the ID
  names the target's track (:mod:`reelrl.rewards.stvg`).
* ``progress`` (``progress``): PRIMO R1's ``max(0, 1 - |p - g| / range)``,
  range from the row's ``meta["progress_range"]`` (default [0, 1]); the
  answer must be exactly one number (:mod:`reelrl.rewards.progress`).
* ``mra`` (evaluation of regression): VSI-Bench's inclusive thresholds, see
  :func:`mra_score`. VSI-Bench reads the prediction as ``float`` of its first
  space-separated word with trailing dots removed (``fuzzy_matching``; "3
  chairs" and "3." give 3, "about 3" and "1,000" give no number and score 0,
  and it has no ``<answer>`` tags); here the ``<answer>`` content is read by
  :func:`parse_number` (its last number, thousands commas, number words), as
  for ``numerical``, so "about 3" scores as 3.
* ``multi_choice_soft``: TW-GRPO's ``accuracy_reward`` first tries
  ``math_verify`` equality, then splits the answer on "," (case-sensitive raw
  strings) and scores ``|P| / |Q|`` when P is a subset of Q; without tags it
  reads the whole completion; its sets are the comma-separated parts after
  removing spaces (so "A C" is the one part "AC" and scores 0, "A," holds an
  empty part and scores 0). Here the tag is required and the letters are
  read by :func:`parse_choices` (case-insensitive; "A C" and "A and C" are
  {A, C}; a letter beyond the options scores 0). ``multi_choice`` is TW-GRPO's exact-set
  ``origin_accuracy_reward``.
* ``format``: Video-R1 ``re.fullmatch``-es ``<think>.*?</think>\\s*<answer>.*?</answer>``,
  which rejects surrounding whitespace and accepts extra tags inside the
  match (``...<answer>b</answer><answer>c</answer>``); here surrounding
  whitespace is allowed and each of the four tags must occur exactly once
  (algorithms.md, :func:`reelrl.data.answers.has_format`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

from reelrl.data.answers import (
    extract_tag,
    has_format,
    parse_choice,
    parse_choices,
    parse_number,
    parse_span,
)
from reelrl.data.boxes import box_iou, parse_box
from reelrl.data.schema import LETTERS, progress_range
from reelrl.data.target_ids import parse_target
from reelrl.rewards.progress import parse_progress, progress_score
from reelrl.registry import Registry

RewardFn = Callable[..., list[float | None]]
REWARDS: Registry[RewardFn] = Registry("reward")

__all__ = [
    "REWARDS",
    "RewardFn",
    "word_error_rate",
    "rouge_fmeasures",
    "rouge_mean_f1",
    "tiou",
    "relative_error",
    "mra_score",
    "score_answer",
]


# ------------------------------------------------------------------ helpers


def _text(completion: Any) -> str:
    """The text of one completion: a string, or the last message of a TRL conversation."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def _column(columns: dict[str, Any], name: str, n: int, reward: str) -> list[Any]:
    """Column ``name`` checked to hold ``n`` entries; the error names the reward."""
    if name not in columns or columns[name] is None:
        raise KeyError(f"reward {reward!r} needs the dataset column {name!r}; got columns {sorted(columns)}")
    col = list(columns[name])
    if len(col) != n:
        raise ValueError(f"reward {reward!r}: column {name!r} has {len(col)} entries for {n} completions")
    return col


def _gold(answer: Any) -> str:
    """A gold answer as text; an ``<answer>`` wrapper, if any, is removed."""
    s = str(answer)
    inner = extract_tag(s)
    return inner if inner is not None else s.strip()


def _n_options(options: Any) -> int:
    """Number of options of a row; rows without options allow every letter A..Z."""
    return len(options) if options else len(LETTERS)


def _gold_letters(answer: str) -> set[str]:
    """Gold letter set from "A,C" / "A, C" (the reelrl schema's multi_choice answer)."""
    return {x.strip().upper() for x in answer.split(",") if x.strip()}


def _gold_number(answer: str, reward: str, row: int) -> float:
    try:
        return float(answer.replace(",", ""))
    except ValueError:
        raise ValueError(f"reward {reward!r}, row {row}: gold answer {answer!r} is not a number") from None


# ------------------------------------------------------------------ metrics


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (unit costs)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edit distance / number of reference words (whitespace split, case-sensitive).

    As in Video-R1's code, the denominator is ``max(1, len(reference words))``,
    so an empty reference against an empty hypothesis gives 0.
    """
    ref, hyp = reference.split(), hypothesis.split()
    return _edit_distance(ref, hyp) / max(1, len(ref))


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    """Video-R1's scorer: ``rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True)``."""
    from rouge_score import rouge_scorer  # imported on first use: it loads nltk's Porter stemmer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_fmeasures(reference: str, prediction: str) -> tuple[float, float, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures from the ``rouge-score`` package, as Video-R1 computes them.

    ``RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True).score(reference, prediction)``.
    Its tokenizer lower-cases, turns every character outside ``[a-z0-9]`` into a
    space (accented and non-Latin letters are dropped: "café" -> "caf"), splits
    on whitespace and Porter-stems tokens longer than 3 characters
    ("running" -> "run", "cats" -> "cat"); n-gram counts are clipped; ROUGE-L is
    the sentence-level LCS. A text without tokens scores 0.
    """
    scores = _rouge_scorer().score(reference, prediction)
    return scores["rouge1"].fmeasure, scores["rouge2"].fmeasure, scores["rougeL"].fmeasure


def rouge_mean_f1(reference: str, prediction: str) -> float:
    """Video-R1's free-form reward: the mean of the three F-measures of :func:`rouge_fmeasures`.

    Video-R1 then clips to [0, 1], which a mean of F-measures already is.
    """
    return sum(rouge_fmeasures(reference, prediction)) / 3.0


def tiou(pred: tuple[float, float], gold: tuple[float, float]) -> float:
    """Temporal IoU ``max(0, min(e, e*) - max(s, s*)) / (max(e, e*) - min(s, s*))`` (algorithms.md).

    A span with end <= start scores 0; the formula gives 0 for such spans too
    wherever its denominator is not 0.
    """
    (s, e), (gs, ge) = pred, gold
    if e <= s or ge <= gs:
        return 0.0
    inter = max(0.0, min(e, ge) - max(s, gs))
    return inter / (max(e, ge) - min(s, gs))


def relative_error(pred: float, gold: float) -> float:
    """|pred - gold| / |gold|; for gold == 0: 0 if |pred| <= 1e-6 else +inf (no scale to compare with)."""
    if gold == 0:
        return 0.0 if abs(pred) <= 1e-6 else math.inf
    return abs(pred - gold) / abs(gold)


MRA_THRESHOLDS = np.linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2))  # [10]: 0.50, 0.55, ..., 0.95
"""VSI-Bench's confidence thresholds, computed as its scorer does (the float64 values of ``np.linspace``)."""
_MRA_TOLERANCES = 1 - MRA_THRESHOLDS  # [10] float64: 0.5, 0.44999999999999996, ..., 0.050000000000000044


def mra_score(pred: float, gold: float) -> float:
    """Mean relative accuracy, VSI-Bench's ``mean_relative_accuracy`` (lmms-eval ``vsibench/utils.py``).

    The reference computes ``abs(pred - gt) / gt <= 1 - np.linspace(0.5, 0.95, 10)``
    in float64 and averages: a relative error exactly on a threshold is a hit,
    as far as float64 says it is. With gt = 10: pred 5 or 15 (error 0.5) ->
    0.1; 9.5 (0.05 <= 0.050000000000000044) -> 1.0; 9 (0.1 <= 0.10000000000000009)
    -> 0.9; but 8 (0.2 > 1 - 0.8 = 0.19999999999999996) -> 0.6, not 0.7.

    Differences: the error is relative to ``|gt|`` (the reference divides by
    ``gt``; VSI-Bench's answers are positive), and ``gt == 0`` scores 1 for
    ``|pred| <= 1e-6`` and 0 otherwise (:func:`relative_error`; the reference
    divides by zero). Video-R1's ``eval_bench.py`` uses a strict ``<`` in
    float32 (so 9.5 vs 10 scores 0.9 there); reelrl follows the benchmark's
    own scorer.
    """
    err = relative_error(pred, gold)
    return float(np.mean(err <= _MRA_TOLERANCES))


# ------------------------------------------------------------------ per-type scoring


def _choice(pred: str, gold: str, options: Any) -> float:
    """Video-R1 ``multiple choice``, with the letter read by :func:`parse_choice` (not exact string equality)."""
    return float(parse_choice(pred, _n_options(options)) == gold.strip().upper())


def _multi_choice(pred: str, gold: str, options: Any) -> float:
    return float(parse_choices(pred, _n_options(options)) == _gold_letters(gold))


def _multi_choice_soft(pred: str, gold: str, options: Any) -> float:
    """TW-GRPO: 1 if P == Q, |P|/|Q| if P is a strict subset of Q, else 0 (empty P: 0)."""
    p, q = parse_choices(pred, _n_options(options)), _gold_letters(gold)
    if not p or not q or not p <= q:
        return 0.0
    return len(p) / len(q)


def _numeric(pred: str, gold: str, row: int) -> float:
    """Video-R1 ``numerical``: equal after ``round(., 2)`` (last number of the answer; see the module docstring)."""
    x = parse_number(pred)
    return 0.0 if x is None else float(round(x, 2) == round(_gold_number(gold, "numeric", row), 2))


def _regression(pred: str, gold: str, row: int) -> float:
    """Video-R1 ``regression``: 1 - min(1, relative error); gold 0: 1 iff |pred| <= 1e-6 (no 1e-9 epsilons)."""
    x = parse_number(pred)
    return 0.0 if x is None else 1.0 - min(1.0, relative_error(x, _gold_number(gold, "regression", row)))


def _mra(pred: str, gold: str, row: int) -> float:
    x = parse_number(pred)
    return 0.0 if x is None else mra_score(x, _gold_number(gold, "mra", row))


def _ocr(pred: str, gold: str) -> float:
    return min(1.0, max(0.0, 1.0 - word_error_rate(gold, pred)))


def _rouge(pred: str, gold: str) -> float:
    return rouge_mean_f1(gold, pred)


def _gold_span(gold: str, time_span: Any, row: int) -> tuple[float, float]:
    span = parse_span(gold)
    if span is None and time_span is not None:
        span = (float(time_span[0]), float(time_span[1]))
    if span is None:
        raise ValueError(f"reward 'tiou', row {row}: gold answer {gold!r} holds no time span and time_span is empty")
    return span


def _box(pred: str, gold: str, row: int) -> float:
    g = parse_box(gold)
    if g is None:
        raise ValueError(f"reward 'box_iou', row {row}: gold answer {gold!r} holds no box '[x1, y1, x2, y2]'")
    p = parse_box(pred)
    return 0.0 if p is None else box_iou(p, g)


def _id_viou(pred: str, gold: str, row: int) -> float:
    """tIoU of the time range when the target ID is right, else 0 (``spatio_temporal_grounding``)."""
    g = parse_target(gold)
    if g is None:
        raise ValueError(f"row {row}: gold answer {gold!r} is not 'Target ID: k, Time range: s to e'")
    p = parse_target(pred)
    return 0.0 if p is None or p[0] != g[0] else tiou(p[1], g[1])


def _progress(pred: str, gold: str, meta: Any, row: int) -> float:
    """PRIMO R1's ``max(0, 1 - |pred - gold| / range)`` (:mod:`reelrl.rewards.progress`); unparseable: 0."""
    try:
        lo, hi = progress_range(meta if isinstance(meta, dict) else {})
    except ValueError as e:
        raise ValueError(f"reward 'progress', row {row}: {e}") from None
    try:
        g = float(gold)
    except ValueError:
        raise ValueError(f"reward 'progress', row {row}: gold answer {gold!r} is not a number") from None
    return progress_score(parse_progress(pred, lo, hi), g, lo, hi)


def _tiou(pred: str, gold: str, time_span: Any, row: int) -> float:
    span = parse_span(pred)
    return 0.0 if span is None else tiou(span, _gold_span(gold, time_span, row))


def score_answer(
    problem_type: str, pred: str, gold: str, *, options: Any = None, time_span: Any = None, row: int = 0,
    meta: Any = None,
) -> float:
    """Video-R1 accuracy of an extracted answer ``pred`` against ``gold`` for one row."""
    if problem_type == "multiple_choice":
        return _choice(pred, gold, options)
    if problem_type == "multi_choice":
        return _multi_choice(pred, gold, options)
    if problem_type == "numerical":
        return _numeric(pred, gold, row)
    if problem_type == "regression":
        return _regression(pred, gold, row)
    if problem_type == "ocr":
        return _ocr(pred, gold)
    if problem_type == "free_form":
        return _rouge(pred, gold)
    if problem_type == "temporal_grounding":
        return _tiou(pred, gold, time_span, row)
    if problem_type == "box":
        return _box(pred, gold, row)
    if problem_type == "spatio_temporal_grounding":
        return _id_viou(pred, gold, row)
    if problem_type == "progress":
        return _progress(pred, gold, meta, row)
    raise ValueError(
        f"row {row}: unknown problem_type {problem_type!r}; valid: multiple_choice, multi_choice, "
        "numerical, regression, ocr, free_form, temporal_grounding, box, spatio_temporal_grounding, progress"
    )


# ------------------------------------------------------------------ registered rewards


def _per_row(
    name: str,
    completions: list[Any],
    columns: dict[str, Any],
    score: Callable[[str, str, int, dict[str, Any]], float],
    extra: tuple[str, ...] = (),
) -> list[float | None]:
    """Apply ``score(pred, gold, row, cols)`` to each row; no answer tag -> 0.0."""
    n = len(completions)
    answers = _column(columns, "answer", n, name)
    cols = {k: (list(columns[k]) if columns.get(k) is not None else [None] * n) for k in extra}
    for k, v in cols.items():
        if len(v) != n:
            raise ValueError(f"reward {name!r}: column {k!r} has {len(v)} entries for {n} completions")
    out: list[float | None] = []
    for i, c in enumerate(completions):
        pred = extract_tag(_text(c))
        out.append(0.0 if pred is None else score(pred, _gold(answers[i]), i, {k: v[i] for k, v in cols.items()}))
    return out


@REWARDS.register("format")
def format_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 when the completion is exactly ``<think>...</think> <answer>...</answer>``, else 0.0.

    One of each tag, whitespace allowed around and between the blocks; Video-R1's
    ``re.fullmatch`` differs on surrounding whitespace and repeated tags (module docstring).
    """
    return [float(has_format(_text(c))) for c in completions]


@REWARDS.register("accuracy")
def accuracy_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """Video-R1 accuracy, dispatched on each row's ``problem_type`` (see :func:`score_answer`).

    Columns: ``answer``, ``problem_type``; ``options`` (choice rows, default
    A..Z allowed) and ``time_span`` (grounding rows whose answer has no span).
    """
    n = len(completions)
    types = _column(columns, "problem_type", n, "accuracy")
    return _per_row(
        "accuracy", completions, columns,
        lambda p, g, i, c: score_answer(types[i], p, g, options=c["options"], time_span=c["time_span"], row=i,
                                        meta=c["meta"]),
        extra=("options", "time_span", "meta"),
    )


@REWARDS.register("choice")
def choice_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 when the answer's letter (:func:`parse_choice`) equals the gold letter."""
    return _per_row("choice", completions, columns, lambda p, g, i, c: _choice(p, g, c["options"]), ("options",))


@REWARDS.register("multi_choice")
def multi_choice_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 when the answer's letter set equals the gold set ("A,C")."""
    return _per_row(
        "multi_choice", completions, columns, lambda p, g, i, c: _multi_choice(p, g, c["options"]), ("options",)
    )


@REWARDS.register("multi_choice_soft")
def multi_choice_soft_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """TW-GRPO soft multi-choice: 1 if P == Q, |P|/|Q| if P is a strict subset of Q, 0 otherwise."""
    def score(pred: str, gold: str, row: int, cols: dict[str, Any]) -> float:
        return _multi_choice_soft(pred, gold, cols["options"])

    return _per_row("multi_choice_soft", completions, columns, score, ("options",))


@REWARDS.register("numeric")
def numeric_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 when the answer's last number equals the gold after rounding both to 2 decimals."""
    return _per_row("numeric", completions, columns, lambda p, g, i, c: _numeric(p, g, i))


@REWARDS.register("regression")
def regression_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """1 - min(1, |pred - gt| / |gt|); with gt == 0, 1.0 iff |pred| <= 1e-6."""
    return _per_row("regression", completions, columns, lambda p, g, i, c: _regression(p, g, i))


@REWARDS.register("progress")
def progress_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """PRIMO R1's progress reward ``max(0, 1 - |pred - gold| / range)`` (:mod:`reelrl.rewards.progress`).

    The range is each row's ``meta["progress_range"]`` (default ``[0, 1]``; PRIMO's percentages: ``[0, 100]``,
    where this is the paper's reward exactly). An answer that is not exactly one number scores 0. Given a
    ``problem_type`` column, rows of another type get None (not applicable), so a recipe mixing progress rows
    with choice rows (failure detection) can train both.
    """
    out = _per_row("progress", completions, columns, lambda p, g, i, c: _progress(p, g, c["meta"], i)
                   if c["problem_type"] in (None, "progress") else 0.0, ("meta", "problem_type"))
    types = columns.get("problem_type")
    return out if types is None else [v if t in (None, "progress") else None for v, t in zip(out, types)]


@REWARDS.register("mra")
def mra_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """VSI-Bench mean relative accuracy over thresholds 0.50..0.95 (:func:`mra_score`; inclusive thresholds)."""
    return _per_row("mra", completions, columns, lambda p, g, i, c: _mra(p, g, i))


@REWARDS.register("ocr")
def ocr_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """clip(1 - WER, 0, 1), word error rate against the gold text (case-sensitive)."""
    return _per_row("ocr", completions, columns, lambda p, g, i, c: _ocr(p, g))


@REWARDS.register("rouge")
def rouge_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """Video-R1's free-form reward: mean ROUGE-1/2/L F-measure (``rouge-score``, stemmed; :func:`rouge_mean_f1`)."""
    return _per_row("rouge", completions, columns, lambda p, g, i, c: _rouge(p, g))


@REWARDS.register("tiou")
def tiou_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """Temporal IoU of the answer's span against the gold span (answer text, else ``time_span``)."""
    return _per_row("tiou", completions, columns, lambda p, g, i, c: _tiou(p, g, c["time_span"], i), ("time_span",))


@REWARDS.register("box_iou")
def box_iou_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """IoU of the answer's box with the gold box of ``answer`` (``box`` rows; module docstring)."""
    return _per_row("box_iou", completions, columns, lambda p, g, i, _: _box(p, g, i))
