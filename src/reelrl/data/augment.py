"""Row-level data augmentation for the RL recipes.

Two methods (algorithms.md):

* **TW-GRPO question-answer inversion** -- :func:`invert_question` turns a
  single-answer choice question into a multi-answer one whose correct answers
  are the old distractors; :func:`qa_inversion` applies it with probability
  ``p`` (the ``qa_inversion`` augmentation of ``rl.augment``).
* **DeepVideo-R1 difficulty-aware augmentation** -- :class:`ReplayDifficulty`
  measures how hard a sample is relative to recent samples (``dR``) and
  :func:`difficulty_augmentation` turns ``dR`` into an :class:`AugmentPlan`:
  frame noise / masking for easy samples, a reasoning hint for hard ones.

Everything is pure given the ``np.random.Generator`` passed in.

Question inversion rule set
---------------------------
Applies only to ``multiple_choice`` rows (one gold letter, >= 2 options). The
rewrite acts on the *question sentence*: the sentence that ends at the last
"?" of ``row.question`` (context before it and instructions after it are kept
verbatim). Rules, first match wins (case-insensitive):

0. Not applicable -> ``None``: another ``problem_type``; no "?" in the
   question; the question sentence already holds a negation (not, n't, never,
   none, nothing) -- a double negation would be ambiguous.
1. ``quantity`` -- "how many/much/far/long/fast/old/often/big/large/tall/high
   ..." and "what fraction/percentage/percent/number/proportion ...": negating
   the auxiliary would not make sense ("How many times doesn't it flash?"), so
   the generic rewrite (rule 4) is used and recorded as ``quantity``.
2. ``happen`` -- "what happened" -> "what didn't happen", "what happens" ->
   "what doesn't happen".
3. ``auxiliary`` -- a wh-word (what, which, who, whom, whose, where, when)
   followed within three words by an auxiliary; the first such auxiliary
   is negated: did->didn't, does->doesn't, do->don't, was->wasn't,
   were->weren't, is->isn't, are->aren't, would->wouldn't, will->won't
   (so "what will" -> "what won't"), can->can't, could->couldn't,
   should->shouldn't, has->hasn't, have->haven't. The capitalisation of the
   auxiliary's first letter is kept.
4. ``generic`` -- any other question: no negatable auxiliary ("Which colour
   appears first?"), "why" / "how" questions (negating them changes what is
   asked: "Why didn't it stop?"), yes/no questions:
   ``Which of the following is NOT a correct answer to the question "<q>"?``
   where ``<q>`` is the question sentence without its "?".

The rewritten question sentence is followed by ``select_suffix`` ("Select all
that apply." by default), as the multi-select gym task does.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from reelrl.data.schema import LETTERS, VideoRow
from reelrl.video.transforms import FrameTransform, gaussian_noise, mask_frames

# --------------------------------------------------------------------------- QA inversion

_AUX_NEG = {
    "did": "didn't",
    "does": "doesn't",
    "do": "don't",
    "was": "wasn't",
    "were": "weren't",
    "is": "isn't",
    "are": "aren't",
    "would": "wouldn't",
    "will": "won't",
    "can": "can't",
    "could": "couldn't",
    "should": "shouldn't",
    "has": "hasn't",
    "have": "haven't",
}
_WH = r"(?:what|which|who|whom|whose|where|when)"
_NEGATED = re.compile(r"\b(?:not|never|none|nothing)\b|n't\b|\bcannot\b", re.IGNORECASE)
_QUANTITY = re.compile(
    r"^(?:how\s+(?:many|much|far|long|fast|old|often|big|large|tall|high)"
    r"|what\s+(?:fraction|percentage|percent|number|proportion))\b",
    re.IGNORECASE,
)
_HAPPEN = re.compile(r"^(what\s+)(happened|happens)\b", re.IGNORECASE)
_AUX = re.compile(
    rf"^({_WH}(?:\s+[\w'-]+){{0,3}}?\s+)({'|'.join(_AUX_NEG)})\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


def _split_question(text: str) -> tuple[str, str, str] | None:
    """``(prefix, question_sentence, suffix)`` around the last "?", or ``None`` without one.

    The question sentence starts after the last sentence end (". ", "! ", "? "
    or a newline) before that "?"; whitespace stays in ``prefix``.
    """
    q_end = text.rfind("?")
    if q_end < 0:
        return None
    start = 0
    for m in _SENTENCE_END.finditer(text, 0, q_end):
        start = m.end()
    while start < q_end and text[start].isspace():
        start += 1
    return text[:start], text[start : q_end + 1], text[q_end + 1 :]


def _match_case(word: str, like: str) -> str:
    return word[0].upper() + word[1:] if like[:1].isupper() else word


def _generic(sentence: str) -> str:
    q = sentence[:-1].rstrip() if sentence.endswith("?") else sentence
    return f'Which of the following is NOT a correct answer to the question "{q}"?'


def negate_question_sentence(sentence: str) -> tuple[str, str] | None:
    """Rewrite one question sentence by the module's rule set: ``(new_sentence, rule)``.

    Returns ``None`` when the sentence already holds a negation (rule 0).
    """
    s = sentence.strip()
    if _NEGATED.search(s):
        return None
    if _QUANTITY.match(s):
        return _generic(s), "quantity"
    m = _HAPPEN.match(s)
    if m:
        neg = "didn't happen" if m.group(2).lower() == "happened" else "doesn't happen"
        return m.group(1) + neg + s[m.end() :], "happen"
    m = _AUX.match(s)
    if m:
        aux = m.group(2)
        return m.group(1) + _match_case(_AUX_NEG[aux.lower()], aux) + s[m.end() :], "auxiliary"
    return _generic(s), "generic"


def invert_question(
    row: VideoRow, rng: np.random.Generator, *, select_suffix: str = "Select all that apply."
) -> VideoRow | None:
    """TW-GRPO question-answer inversion of a ``multiple_choice`` row (rules: module docstring).

    The old correct option becomes the only wrong option; ``k ~ U{1..D}`` of the
    ``D`` old distractors (a uniform random subset of size ``k``) are kept as
    the correct answers; the other distractors are dropped; the ``k + 1``
    options are shuffled. The new row has ``problem_type="multi_choice"``, an
    answer of sorted letters ("A,C"), id ``f"{row.id}-inv"``, no reasoning, and
    ``meta["qa_inversion"]`` recording the source id, the rule, the original
    question and answer text and ``k``. Returns ``None`` when no rule applies.
    """
    if row.problem_type != "multiple_choice" or not row.options or len(row.options) < 2:
        return None
    parts = _split_question(row.question)
    if parts is None:
        return None
    prefix, sentence, suffix = parts
    rewritten = negate_question_sentence(sentence)
    if rewritten is None:
        return None
    new_sentence, rule = rewritten
    correct = LETTERS.index(row.answer.strip())
    distractors = [i for i in range(len(row.options)) if i != correct]
    k = int(rng.integers(1, len(distractors) + 1))
    kept = sorted(int(i) for i in rng.choice(distractors, size=k, replace=False))
    chosen = [correct, *kept]
    order = [chosen[int(j)] for j in rng.permutation(len(chosen))]
    options = [row.options[i] for i in order]
    answer = ",".join(LETTERS[j] for j, i in enumerate(order) if i != correct)
    tail = f" {select_suffix}" if select_suffix else ""
    meta: dict[str, Any] = dict(row.meta)
    meta["qa_inversion"] = {
        "source_id": row.id,
        "rule": rule,
        "original_question": row.question,
        "original_answer": row.options[correct],
        "kept": k,
    }
    data = row.model_dump()
    data.update(
        id=f"{row.id}-inv",
        question=f"{prefix}{new_sentence}{tail}{suffix}",
        options=options,
        answer=answer,
        problem_type="multi_choice",
        reasoning=None,
        meta=meta,
    )
    return VideoRow.model_validate(data)


def qa_inversion(row: VideoRow, rng: np.random.Generator, *, p: float = 0.5) -> VideoRow:
    """With probability ``p`` replace ``row`` by :func:`invert_question` (the row itself when not applicable).

    One uniform draw decides first; the inversion then draws from the same ``rng``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"qa_inversion: p must lie in [0, 1], got {p}")
    if rng.random() >= p:
        return row
    inv = invert_question(row, rng)
    return row if inv is None else inv


# --------------------------------------------------------------------------- DeepVideo-R1


class ReplayDifficulty:
    """Replay buffer of the last ``window`` per-sample mean rewards (DeepVideo-R1, W = 100).

    ``gap(r) = mean(buffer) - r``: ``> 0`` the sample is harder than recent ones,
    ``< 0`` easier. An empty buffer gives a gap of 0 (no evidence either way).
    """

    def __init__(self, window: int = 100) -> None:
        if window < 1:
            raise ValueError(f"ReplayDifficulty: window must be >= 1, got {window}")
        self.window = window
        self._buf: deque[float] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._buf)

    def observe(self, mean_rewards: Sequence[float]) -> None:
        """Append per-sample mean rewards (oldest entries fall out past ``window``)."""
        vals = [float(v) for v in mean_rewards]
        bad = [v for v in vals if not math.isfinite(v)]
        if bad:
            raise ValueError(f"ReplayDifficulty.observe: mean rewards must be finite, got {bad}")
        self._buf.extend(vals)

    def replay_mean(self) -> float | None:
        """Mean of the buffer, ``None`` when empty."""
        return float(np.mean(self._buf)) if self._buf else None

    def gap(self, sample_mean_reward: float) -> float:
        """``dR = replay mean - sample_mean_reward`` (0.0 while the buffer is empty)."""
        m = self.replay_mean()
        return 0.0 if m is None else m - float(sample_mean_reward)

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "buffer": list(self._buf)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["window"]) != self.window:
            raise ValueError(f"ReplayDifficulty state has window={state['window']}, this buffer has {self.window}")
        self._buf = deque((float(v) for v in state["buffer"]), maxlen=self.window)


@dataclass(frozen=True)
class AugmentPlan:
    """What to do with one sample.

    frame_transform  ``frames [T,H,W,3] uint8 -> same`` or ``None`` (frames unchanged).
    variant          a string that determines the plan exactly (kind, strength level,
                     parameters, noise seed); "orig" for the unchanged sample. Use it
                     with the row id as a cache key.
    hint             text to append to the prompt, or ``None``.
    kind             "none", "noise", "mask" or "hint".
    strength         the quantised strength in [0, 1] (0 for "none").
    """

    frame_transform: FrameTransform | None
    variant: str
    hint: str | None
    kind: str = "none"
    strength: float = 0.0


NO_AUGMENT = AugmentPlan(frame_transform=None, variant="orig", hint=None)

_TAGS = re.compile(r"</?think>", re.IGNORECASE)


def _clean_trace(trace: str) -> str:
    """Drop think tags and everything from ``<answer>`` on (the hint must not state the answer tag)."""
    cut = trace.lower().find("<answer>")
    if cut >= 0:
        trace = trace[:cut]
    return _TAGS.sub(" ", trace).strip()


def hint_prefix_words(trace: str, frac: float) -> str:
    """The first ``ceil(frac * n_words)`` whitespace-separated words of ``trace`` (after cleaning)."""
    words = _clean_trace(trace).split()
    n = min(len(words), math.ceil(frac * len(words) - 1e-9))
    return " ".join(words[:n])


def _strength(gap: float, scale: float, levels: int) -> tuple[int, float]:
    """``(level, strength)``: strength = ceil(levels * min(1, |gap| / scale)) / levels."""
    raw = min(1.0, abs(gap) / scale)
    level = min(levels, math.ceil(raw * levels - 1e-9))
    return level, level / levels


def difficulty_augmentation(
    row: VideoRow,
    dR: float,
    rng: np.random.Generator,
    *,
    easy: str = "noise",
    noise_max_sigma: float = 32.0,
    mask_max_frac: float = 0.5,
    hint_max_frac: float = 0.5,
    scale: float = 0.5,
    levels: int = 20,
    min_gap: float = 0.0,
    trace: str | None = None,
    hint_prefix: str = "Hint: ",
    fill: int = 0,
) -> AugmentPlan:
    """DeepVideo-R1 difficulty-aware augmentation: an :class:`AugmentPlan` for ``row`` given its gap ``dR``.

    Strength: ``s = ceil(levels * min(1, |dR| / scale)) / levels`` -- grows with
    ``|dR|``, reaches 1 at ``|dR| >= scale`` and is quantised to ``levels`` steps
    so plans (and their cache keys) repeat. ``|dR| <= min_gap`` gives no augmentation.

    * Easy (``dR < 0``): ``easy="noise"`` adds Gaussian noise with
      ``sigma = noise_max_sigma * s`` pixel units; ``easy="mask"`` blanks
      ``mask_max_frac * s`` of the frames (:func:`reelrl.video.transforms.mask_frames`).
      The noise / mask seed is drawn from ``rng`` and appears in ``variant``;
      pass an ``rng`` seeded from the row id to make a row's plan repeat.
    * Hard (``dR > 0``): ``hint = hint_prefix + the first ceil(hint_max_frac * s *
      n_words)`` words of the reasoning trace ``trace`` (else ``row.reasoning``),
      with think tags and anything from ``<answer>`` on removed. No trace: no
      augmentation (variant "orig").

    Deviation from DeepVideo-R1: the paper takes the best reasoning trace
    generated with the answer in the prompt; here the caller passes whatever
    trace it has (e.g. the best-rewarded completion of an answer-conditioned
    rollout) or the dataset's reasoning is used.
    """
    if easy not in ("noise", "mask"):
        raise ValueError(f"difficulty_augmentation: easy must be 'noise' or 'mask', got {easy!r}")
    if scale <= 0 or levels < 1:
        raise ValueError(f"difficulty_augmentation: need scale > 0 and levels >= 1, got scale={scale}, levels={levels}")
    if not math.isfinite(dR):
        raise ValueError(f"difficulty_augmentation: row {row.id}: dR must be finite, got {dR}")
    if abs(dR) <= min_gap or dR == 0.0:
        return NO_AUGMENT
    level, s = _strength(dR, scale, levels)
    if dR < 0:
        seed = int(rng.integers(0, 2**63 - 1))
        if easy == "noise":
            sigma = noise_max_sigma * s

            def noise(frames: np.ndarray) -> np.ndarray:
                return gaussian_noise(frames, sigma, np.random.default_rng(seed))  # [T, H, W, 3]

            return AugmentPlan(noise, f"noise(level={level}/{levels},sigma={sigma!r},seed={seed})", None, "noise", s)
        frac = mask_max_frac * s

        def mask(frames: np.ndarray) -> np.ndarray:
            return mask_frames(frames, frac, np.random.default_rng(seed), fill=fill)  # [T, H, W, 3]

        return AugmentPlan(mask, f"mask(level={level}/{levels},frac={frac!r},fill={fill},seed={seed})", None, "mask", s)
    source = trace if trace else row.reasoning
    if not source:
        return NO_AUGMENT
    frac = hint_max_frac * s
    text = hint_prefix_words(source, frac)
    if not text:
        return NO_AUGMENT
    digest = zlib.crc32(text.encode("utf-8"))
    return AugmentPlan(None, f"hint(level={level}/{levels},frac={frac!r},text={digest:08x})", hint_prefix + text, "hint", s)
