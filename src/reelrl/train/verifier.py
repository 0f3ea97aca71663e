"""VerIPO's rollout-aware verifier and the preference pairs it yields.

Paper: Li et al. 2025, "VerIPO: Cultivating Long Reasoning in Video-LLMs via
Verifier-Guided Iterative Policy Optimization". A verifier scores each
rollout on four rules, then preference pairs are built per prompt for DPO.
The exact pair rules were not published; the ones here are:

Rules (:func:`verify`, settings in :class:`reelrl.config.VerifierConfig`):

* **correct** -- the recipe's accuracy reward (``accuracy_reward``) is
  ``>= correct_threshold``.
* **consistent** -- the reasoning's final claim (:func:`final_claim`: the last
  option or number the ``<think>`` text names) equals the ``<answer>``; a
  reasoning that names nothing checkable counts as consistent. With a judge
  model (``judge_path``), consistency also needs the judge's P(yes) >=
  ``judge_threshold`` (:class:`Judge`).
* **repetitive** -- the fraction of repeated word ``repetition_ngram``-grams
  exceeds ``max_repetition`` (:func:`repetition_rate`).
* **length** -- at least ``min_tokens`` tokens, at most ``max_tokens`` when set,
  and not cut off by the generation budget (unless ``allow_truncated``).

Pairs (:func:`build_pairs`): chosen = correct, consistent, not repetitive,
length ok (and formatted when ``require_format``); rejected = wrong,
inconsistent, repetitive or failing the length check. Wrong rejections are
used first, then inconsistent, repetitive, length. Chosen rollouts are
ordered by :attr:`Verdict.score`. A chosen rollout whose reasoning corrects
itself ("wait", "actually", ... then a different final claim) after a wrong
first claim also yields the pair (self-corrected rollout, its first attempt
cut at the correction marker with that wrong claim as the answer).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from reelrl.data.answers import (
    claims,
    extract_tag,
    final_claim,
    has_format,
    normalised_answer,
)
from reelrl.data.schema import VideoRow

__all__ = [
    "Judge",
    "PreferencePair",
    "Verdict",
    "build_pairs",
    "repetition_rate",
    "self_correction_rejection",
    "verify",
]

CORRECTION_MARKERS = ("wait", "actually", "on second thought", "let me re-check", "let me recheck", "correction")
_TAGS = re.compile(r"</?(?:think|answer)>")


@dataclass(frozen=True)
class Verdict:
    """What the verifier found about one rollout."""

    accuracy: float
    correct: bool
    formatted: bool
    consistent: bool
    repetition: float
    repetitive: bool
    length_ok: bool
    claim: str | None  # the reasoning's final claim (option letter or number), None when there is none
    answer: str | None  # the normalised <answer> (option letter or number), None when unparsed
    judge: float | None = None  # judge P(yes) when a judge is configured

    @property
    def good(self) -> bool:
        """Correct, consistent, not repetitive, length ok (the format check is applied in build_pairs)."""
        return self.correct and self.consistent and not self.repetitive and self.length_ok

    @property
    def faults(self) -> list[str]:
        """Why this rollout can be rejected, most serious first (empty: not rejectable)."""
        out = []
        for bad, name in ((not self.correct, "wrong"), (not self.consistent, "inconsistent"),
                          (self.repetitive, "repetitive"), (not self.length_ok, "length")):
            if bad:
                out.append(name)
        return out

    @property
    def score(self) -> float:
        """Ranking score: accuracy + consistency + format + length + (1 - repetition) (+ judge)."""
        return (self.accuracy + float(self.consistent) + float(self.formatted) + float(self.length_ok)
                + (1.0 - self.repetition) + (self.judge or 0.0))


@dataclass(frozen=True)
class PreferencePair:
    """One DPO pair of a prompt: rollout indices, or a text for a synthesised rejection."""

    row_id: str
    chosen: int
    rejected: int | str
    reason: str  # fault of the rejected rollout ("wrong", ..., "self_correction")


def repetition_rate(text: str, n: int = 3) -> float:
    """Fraction of word n-grams that repeat an earlier n-gram: ``1 - unique / total`` (0 when fewer than n words).

    The think / answer tags are removed first.
    """
    if n < 1:
        raise ValueError(f"repetition_rate: n must be >= 1, got {n}")
    words = _TAGS.sub(" ", text).lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def self_correction_rejection(text: str, row: VideoRow, markers: Sequence[str] = CORRECTION_MARKERS) -> str | None:
    """The first wrong attempt of a self-corrected rollout, as a completion text; None if there is none.

    The reasoning must contain a correction marker (word-bounded, case-insensitive)
    with a claim before it that differs from the gold answer and from the
    reasoning's final claim. The result is the reasoning up to the marker,
    closed, answered with that first claim (a letter for choice questions).
    """
    think = extract_tag(text, "think")
    if think is None:
        return None
    rx = re.compile(r"\b(?:" + "|".join(re.escape(m) for m in markers) + r")\b", re.IGNORECASE)
    m = rx.search(think)
    if m is None:
        return None
    before = claims(think[: m.start()], row)
    final = final_claim(think, row)
    gold = normalised_answer(row.answer, row)
    if not before or final is None:
        return None
    first = before[-1][1]
    if first == final or first == gold:
        return None
    return f"<think>{think[: m.start()].rstrip()}</think><answer>{first}</answer>"


# ------------------------------------------------------------------ verifier


class Judge:
    """Optional judge: P("yes") that a rollout's answer follows from its reasoning, from a local checkpoint.

    The checkpoint (any chat model reelrl can load) gets a text-only prompt
    with the question, the reasoning and the answer, and the next-token
    probabilities of " yes" / " no" (first token of each word) are
    renormalised: ``P(yes) = p_yes / (p_yes + p_no)``.
    """

    PROMPT = (
        "Question: {question}\nReasoning: {reasoning}\nFinal answer: {answer}\n"
        "Does the final answer follow from the reasoning? Answer yes or no."
    )

    def __init__(self, path: str, device: torch.device | str = "cpu") -> None:
        from reelrl.models.load import load_model_and_processor

        self.model, self.processor = load_model_and_processor(path, device=str(device))
        tok = self.processor.tokenizer
        self.yes, self.no = (tok.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))
        if self.yes == self.no:
            raise ValueError(f"judge {path}: 'yes' and 'no' start with the same token")
        self.device = device

    @torch.no_grad()
    def __call__(self, question: str, reasoning: str, answer: str) -> float:
        text = self.PROMPT.format(question=question, reasoning=reasoning, answer=answer)
        chat = self.processor.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        ids = torch.tensor([self.processor.tokenizer(chat)["input_ids"]], device=self.device)  # [1, L]
        logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()  # [V]
        two = torch.log_softmax(logits, dim=-1)[[self.yes, self.no]]  # [2]
        return float(torch.softmax(two, dim=-1)[0])


def verify(
    texts: Sequence[str],
    accuracy: Sequence[float],
    lengths: Sequence[int],
    truncated: Sequence[bool],
    row: VideoRow,
    cfg,
    judge: Judge | None = None,
) -> list[Verdict]:
    """One :class:`Verdict` per rollout of ``row`` (``cfg``: :class:`reelrl.config.VerifierConfig`)."""
    out = []
    for text, acc, n, cut in zip(texts, accuracy, lengths, truncated, strict=True):
        acc = 0.0 if acc is None or math.isnan(float(acc)) else float(acc)
        think = extract_tag(text, "think") or ""
        answer = normalised_answer(extract_tag(text), row)
        claim = final_claim(think, row)
        consistent = claim is None or claim == answer
        score = None
        if judge is not None:
            score = judge(row.prompt_text(), think, extract_tag(text) or "")
            consistent = consistent and score >= cfg.judge_threshold
        rep = repetition_rate(text, cfg.repetition_ngram)
        length_ok = (cfg.allow_truncated or not bool(cut)) and int(n) >= cfg.min_tokens and (
            cfg.max_tokens is None or int(n) <= cfg.max_tokens)
        out.append(Verdict(
            accuracy=acc, correct=acc >= cfg.correct_threshold, formatted=has_format(text), consistent=consistent,
            repetition=rep, repetitive=rep > cfg.max_repetition, length_ok=length_ok, claim=claim, answer=answer,
            judge=score,
        ))
    return out


def build_pairs(
    row: VideoRow,
    texts: Sequence[str],
    verdicts: Sequence[Verdict],
    *,
    max_pairs: int,
    require_format: bool = True,
    self_correction: bool = True,
) -> list[PreferencePair]:
    """Preference pairs of one prompt's rollouts (rules: module docstring), at most ``max_pairs``."""
    good = [i for i, v in enumerate(verdicts) if v.good and (v.formatted or not require_format)]
    good.sort(key=lambda i: (-verdicts[i].score, i))
    severity = {"wrong": 0, "inconsistent": 1, "repetitive": 2, "length": 3}
    bad = [i for i, v in enumerate(verdicts) if v.faults]
    bad.sort(key=lambda i: (severity[verdicts[i].faults[0]], verdicts[i].score, i))
    pairs: list[PreferencePair] = []
    if self_correction:
        for i in good:
            rejected = self_correction_rejection(texts[i], row)
            if rejected is not None:
                pairs.append(PreferencePair(row.id, i, rejected, "self_correction"))
    for c, r in zip(good, bad):
        pairs.append(PreferencePair(row.id, c, r, verdicts[r].faults[0]))
    return pairs[:max_pairs]
