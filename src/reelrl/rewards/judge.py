"""Judges of free-form answers, one interface, and the ``judge`` reward.

VideoHallu (Li et al. 2025, arXiv 2505.01481) scores free-form answers about
what happens in a video with a learned similarity model / LLM judge against
an expert-written reference. reelrl puts every judge behind one interface,
:class:`Judge` (``score(question, answer, reference) -> float in [0, 1]``),
registered by name in :data:`JUDGES`:

rule   (default) deterministic event matching, :func:`rule_score`: the events
       the answer states are compared with the events of the reference.
model  a LOCAL checkpoint given by ``path`` (a transformers causal LM, or a
       VLM directory reelrl loads, such as the tiny model): a fixed prompt
       (:data:`MODEL_PROMPT`), greedy decoding of ``max_new_tokens`` tokens,
       the first number of the output read as a 0-10 score
       (:func:`parse_score`) and divided by 10; an output without a number in
       [0, 10] scores 0. Loaded once per (path, device) and cached; never
       downloaded (``local_files_only``). VideoHallu's own judge model and
       prompt are not reproduced: the prompt here is reelrl's.

The rule judge
--------------
Text is lower-cased and cut into sentences at ``. ! ? ;`` and into clauses
at ``,`` ``:`` and the words ``but``, ``and``, ``then``, ``while``, ``yet``,
``although``, ``whereas``. Each synonym pattern of :data:`EVENTS` found in a
clause (longest match first, matches never overlap: "falls upward" is
``falls_upward``, not ``falls``) is one event mention. A mention is NEGATED
when a negator (``not``, ``n't``, ``no``, ``never``, ``without``,
``neither``, ``nor``, ``nothing``, ``instead of``, ``rather than``,
``cannot``) comes before it in its clause: "the ball does not teleport",
"it doesn't fall or bounce" (``or`` keeps the scope), "instead of falling,
it rises" (falling negated, rises stated). "rises" / "goes up" right after
a bounce in the same sentence is the rebound, not ``falls_upward``.

With ``G+`` / ``G-`` the stated / negated events of the reference and
``A+`` / ``A-`` those of the answer::

    score = 0                    if A- & G+  or  A+ & G-      (a contradiction)
          = 0                    if (A+ & VIOLATION_EVENTS) - G+   (a violation the reference does not state)
          = |G+ & A+| / |G+|     otherwise

A reference that states no event is a data error (``ValueError`` naming the
row). Limits: double negation and events outside :data:`EVENTS` are not
understood.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reelrl.data.answers import extract_tag
from reelrl.registry import Registry
from reelrl.rewards.functions import REWARDS, _column, _gold, _text

__all__ = ["EVENTS", "JUDGES", "MODEL_PROMPT", "Judge", "JudgeConfig", "events", "judge_reward", "parse_score",
           "rule_score"]

_W = r"(?:\w+\s+){0,2}?"  # up to two filler words ("passes right through", "jumps to a different place")
EVENTS: dict[str, tuple[str, ...]] = {
    "falls_upward": (r"falls? up(?:wards?)?", r"falling up(?:wards?)?", r"fell up(?:wards?)?",
                     r"(?:floats?|floating|flies|flying|flew|drifts?|drifting|accelerates?|accelerating) "
                     r"(?:up(?:wards?)?|away|into the air)", r"defies gravity", r"defying gravity",
                     r"anti-?gravity", r"rises?", r"rising", r"rose", r"(?:goes|going|moves?|moving|went) up(?:wards?)?"),
    "teleports": (r"teleport(?:s|ed|ing|ation)?", r"jumps? " + _W + r"(?:to|into) (?:an?other|a different|the other)",
                  r"(?:disappears?|vanish(?:es)?) and (?:re)?appears?", r"reappears? (?:somewhere|elsewhere)",
                  r"instantly (?:moves?|jumps?)"),
    "passes_through": (r"(?:passes|passed|passing|pass|goes|went|going|moves|moving|falls|sinks|slides|rolls) "
                       + _W + r"(?:through|into) the (?:floor|wall|ground)",
                       r"(?:passes|passed|passing|goes|went|going) (?:right |straight )?through", r"penetrates?",
                       r"clips? through"),
    "changes_size": (r"changes? (?:its )?size", r"changing (?:its )?size", r"grows?", r"growing", r"grew",
                     r"shrinks?", r"shrinking", r"shrank", r"(?:gets|becomes|got|became) (?:bigger|larger|smaller)",
                     r"expands?", r"inflates?", r"swells?"),
    "bounces": (r"bounc(?:es|ed|ing|e)", r"rebounds?", r"rebounded"),
    "falls": (r"falls?", r"falling", r"fell", r"drops?", r"dropped", r"dropping", r"descends?", r"comes down"),
    "slides": (r"slides?", r"sliding", r"slid", r"rolls?", r"rolling", r"rolled", r"glides?", r"gliding"),
    "stops": (r"stops?", r"stopped", r"stopping", r"comes? to (?:a )?(?:rest|stop|halt)", r"halts?", r"settles?",
              r"stays? still"),
    "impossible": (r"impossible", r"not (?:physically )?possible", r"unphysical", r"violates? (?:the laws of )?physics",
                   r"breaks? (?:the laws of )?physics", r"defies physics"),
}
"""Canonical events and their synonym patterns (regular expressions, matched on word boundaries)."""
VIOLATION_EVENTS = frozenset({"falls_upward", "teleports", "passes_through", "changes_size", "impossible"})
"""Events that break physics: stating one the reference does not state scores 0."""
_NEGATOR = re.compile(r"\b(?:not|no|never|without|neither|nor|nothing|cannot|instead of|rather than)\b|n't\b")
_SENTENCE = re.compile(r"[.!?;\n]+")
_CLAUSE = re.compile(r",|:|\b(?:but|and|then|while|yet|although|whereas)\b")
_PATTERNS = [(ev, re.compile(rf"\b(?:{p})\b")) for ev, ps in EVENTS.items() for p in ps]


def events(text: str) -> tuple[set[str], set[str]]:
    """``(stated, negated)`` event sets of ``text`` (module docstring: clauses, negation, longest match first)."""
    stated: set[str] = set()
    negated: set[str] = set()
    for sentence in _SENTENCE.split(text.lower()):
        hits = sorted(((m.start(), -len(m.group()), ev) for ev, rx in _PATTERNS for m in rx.finditer(sentence)))
        taken: list[tuple[int, int, str]] = []
        for start, neg_len, ev in hits:
            end = start - neg_len
            if all(end <= s or start >= e for s, e, _ in taken):
                taken.append((start, end, ev))
        bounced = False
        for start, _, ev in sorted(taken):
            if ev == "bounces":
                bounced = True
            if ev == "falls_upward" and bounced and re.match(r"ris|rose|go|went|mov", sentence[start:]):
                continue  # "bounces and rises": the rebound
            cuts = [m.end() for m in _CLAUSE.finditer(sentence, 0, start)]
            clause = sentence[cuts[-1] if cuts else 0 : start]
            (negated if _NEGATOR.search(clause) else stated).add(ev)
    return stated, negated


def rule_score(answer: str, reference: str, row: int = 0) -> float:
    """The rule judge's score of ``answer`` against ``reference`` (module docstring)."""
    g_pos, g_neg = events(reference)
    if not g_pos:
        raise ValueError(f"judge 'rule', row {row}: the reference {reference!r} states no event the rule judge "
                         f"knows ({', '.join(EVENTS)})")
    a_pos, a_neg = events(answer)
    if a_neg & g_pos or a_pos & g_neg or (a_pos & VIOLATION_EVENTS) - g_pos:
        return 0.0
    return len(g_pos & a_pos) / len(g_pos)


# ------------------------------------------------------------------ the interface


class Judge(Protocol):
    """Scores one free-form answer against its reference, in [0, 1]."""

    def score(self, question: str, answer: str, reference: str, row: int = 0) -> float: ...


class JudgeConfig(BaseModel):
    """The ``judge`` reward's kwargs (checked when a recipe loads)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    judge: str = Field("rule", description="A name in JUDGES: 'rule' (default) or 'model'.")
    path: str | None = Field(None, description="Local checkpoint directory of the 'model' judge.")
    max_new_tokens: int = Field(8, ge=1, le=256, description="Tokens the 'model' judge may write before its score.")
    device: str = Field("cpu", description="Device of the 'model' judge.")

    @model_validator(mode="after")
    def _known(self) -> "JudgeConfig":
        if self.judge not in JUDGES:
            raise ValueError(f"unknown judge {self.judge!r}; valid names: {', '.join(JUDGES.names())}")
        needs_path = bool(JUDGES.trait(self.judge, "needs_path", False))
        if needs_path and not self.path:
            raise ValueError(f"judge {self.judge!r} needs path: a local checkpoint directory")
        if not needs_path and self.path:
            raise ValueError(f"judge {self.judge!r} takes no path (only a model judge loads a checkpoint)")
        if self.path and not (Path(self.path).expanduser() / "config.json").is_file():
            raise ValueError(f"judge path {self.path!r} is not a local checkpoint directory (no config.json)")
        return self


JUDGES: Registry[Callable[[JudgeConfig], Judge]] = Registry("judge")
"""Judge factories by name: ``JUDGES.get("rule")(JudgeConfig()) -> Judge``."""


@dataclass(frozen=True)
class RuleJudge:
    """:func:`rule_score`; the question is not used."""

    def score(self, question: str, answer: str, reference: str, row: int = 0) -> float:
        return rule_score(answer, reference, row)


JUDGES.register("rule")(lambda cfg: RuleJudge())

MODEL_PROMPT = (
    "You grade an answer about a video against a reference description of what happens in it.\n"
    "Question: {question}\nReference: {reference}\nAnswer: {answer}\n"
    "Does the answer describe the same event as the reference? Reply with one integer from 0 (a different "
    "event) to 10 (the same event).\nScore:"
)
"""The model judge's fixed prompt (text only; wrapped in the checkpoint's chat template when it has one)."""


def parse_score(text: str) -> float | None:
    """The first number of a model judge's output as a 0-10 score divided by 10; None if missing or outside [0, 10]."""
    m = re.search(r"\d+(?:\.\d+)?", text)
    if m is None:
        return None
    x = float(m.group())
    return x / 10.0 if math.isfinite(x) and 0.0 <= x <= 10.0 else None


class ModelJudge:
    """A local checkpoint as the judge (module docstring); use :func:`model_judge` for the cached instance."""

    def __init__(self, path: str, device: str = "cpu", max_new_tokens: int = 8) -> None:
        import torch

        root = Path(path).expanduser()
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
        if "vision_config" in config:  # a VLM directory reelrl trains (tiny or real)
            from reelrl.models.load import load_model_and_processor

            self.model, processor = load_model_and_processor(str(root), device=device)
            self.tokenizer: Any = processor.tokenizer
            self._template: Callable[[str], str] | None = lambda text: processor.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.model = AutoModelForCausalLM.from_pretrained(str(root), local_files_only=True).to(device)
            self.tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
            tok = self.tokenizer
            self._template = (None if not getattr(tok, "chat_template", None) else lambda text: tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False))
        self.model.eval()
        self.device, self.max_new_tokens, self._torch = device, max_new_tokens, torch

    def generate(self, prompt: str) -> str:
        """Greedy continuation of ``prompt`` (chat-wrapped when the checkpoint has a template), decoded."""
        torch = self._torch
        text = self._template(prompt) if self._template is not None else prompt
        ids = torch.tensor([self.tokenizer(text)["input_ids"]], device=self.device)  # [1, L]
        eos = self.tokenizer.eos_token_id
        out: list[int] = []
        with torch.no_grad():
            for _ in range(self.max_new_tokens):
                logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]  # [V]
                nxt = int(logits.argmax())
                if nxt == eos:
                    break
                out.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]], device=self.device)], dim=1)  # [1, L+1]
        return self.tokenizer.decode(out, skip_special_tokens=True)

    def score(self, question: str, answer: str, reference: str, row: int = 0) -> float:
        verdict = parse_score(self.generate(MODEL_PROMPT.format(question=question, reference=reference, answer=answer)))
        return 0.0 if verdict is None else verdict


@lru_cache(maxsize=4)
def model_judge(path: str, device: str = "cpu", max_new_tokens: int = 8) -> ModelJudge:
    """The :class:`ModelJudge` of ``path``, loaded once per (path, device, max_new_tokens)."""
    return ModelJudge(str(Path(path).expanduser().resolve()), device, max_new_tokens)


JUDGES.register("model", needs_path=True)(lambda cfg: model_judge(str(cfg.path), cfg.device, cfg.max_new_tokens))


# ------------------------------------------------------------------ the reward


def check_judge_kwargs(**kwargs: Any) -> None:
    """Recipe-load check of the ``judge`` reward's kwargs (raises ``ValueError`` with each problem)."""
    from pydantic import ValidationError

    try:
        JudgeConfig(**kwargs)
    except ValidationError as e:
        raise ValueError("; ".join(f"{'.'.join(map(str, x['loc'])) or 'judge'}: {x['msg']}" for x in e.errors())) from None


@REWARDS.register("judge", check=check_judge_kwargs)
def judge_reward(
    completions: list[Any],
    judge: str = "rule",
    path: str | None = None,
    max_new_tokens: int = 8,
    device: str = "cpu",
    **columns: Any,
) -> list[float | None]:
    """A judge's score of the ``<answer>`` against the gold ``answer`` (free-form rows; module docstring).

    Rows whose ``problem_type`` is given and is not ``free_form`` get None (not applicable); without a
    ``problem_type`` column every row is judged. No answer tag: 0. ``question`` is passed to the judge when
    the column is given. Kwargs: :class:`JudgeConfig`.
    """
    cfg = JudgeConfig(judge=judge, path=path, max_new_tokens=max_new_tokens, device=device)
    n = len(completions)
    gold = _column(columns, "answer", n, "judge")
    types = columns.get("problem_type") or [None] * n
    questions = columns.get("question") or [""] * n
    the_judge: Judge | None = None
    out: list[float | None] = []
    for i, c in enumerate(completions):
        if types[i] is not None and types[i] != "free_form":
            out.append(None)
            continue
        pred = extract_tag(_text(c))
        if pred is None:
            out.append(0.0)
            continue
        the_judge = the_judge or JUDGES.get(cfg.judge)(cfg)
        out.append(float(min(1.0, max(0.0, the_judge.score(str(questions[i] or ""), pred, _gold(gold[i]), i)))))
    return out

