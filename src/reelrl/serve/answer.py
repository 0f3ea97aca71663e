"""The served answer: a progress number in [0, 1], decoded greedily within its grammar.

After the forced ``<answer>`` the critic writes ``0``, ``1``, ``0.d``..``0.dd``
or ``1.0``..``1.00`` (at most :data:`~reelrl.data.progress_prompt.PROGRESS_DECIMALS`
digits) and then ``</answer>``. Each step takes the highest-scoring token
*among those the grammar allows next*, so a model whose own greedy choice is
a well-formed number decodes exactly its greedy answer, and any model
(including the random tiny one) always yields a number: a reward server must
never answer "unparseable". The checkpoint's tokenizer must write each digit
and ``.`` as one token, as Qwen's do (digits are split one by one before BPE);
:class:`AnswerGrammar` checks this when it is built.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reelrl.data.progress_prompt import ANSWER_CLOSE, PROGRESS_DECIMALS

__all__ = ["AnswerGrammar"]

_DIGITS = "0123456789"


class AnswerGrammar:
    """Which tokens may come next in a progress answer (module docstring)."""

    def __init__(self, tokenizer, vocab_size: int, decimals: int = PROGRESS_DECIMALS) -> None:
        if decimals < 0:
            raise ValueError(f"decimals must be >= 0, got {decimals}")
        self.decimals, self.vocab_size = decimals, vocab_size
        self.char_id: dict[str, int] = {}
        for ch in _DIGITS + ".":
            ids = tokenizer(ch, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"the tokenizer writes {ch!r} as {len(ids)} tokens; the served answer needs one")
            self.char_id[ch] = ids[0]
        close = tokenizer(ANSWER_CLOSE, add_special_tokens=False)["input_ids"]
        self.end_id: int = close[0]  # the first token of </answer>: the model's choice to stop
        self.id_char = {i: c for c, i in self.char_id.items()}
        if self.end_id in self.id_char:
            raise ValueError(f"{ANSWER_CLOSE!r} starts with the token of {self.id_char[self.end_id]!r}")
        sample = "0." + "4" * max(decimals, 1)
        if tokenizer(sample + ANSWER_CLOSE, add_special_tokens=False)["input_ids"] != \
                [self.char_id[c] for c in sample] + close:
            raise ValueError(f"the tokenizer merges {sample + ANSWER_CLOSE!r} across characters; "
                             "the served answer needs one token per character")
        self._masks: dict[str, Tensor] = {}

    def allowed(self, text: str) -> list[int]:
        """Token ids allowed after the answer ``text`` so far; ``[]`` when the answer is complete."""
        if text == "":
            return [self.char_id["0"], self.char_id["1"]]
        head, dot, frac = text.partition(".")
        if not dot:
            return [self.char_id["."], self.end_id] if self.decimals else [self.end_id]
        if len(frac) >= self.decimals:
            return []
        digits = [self.char_id["0"]] if head == "1" else [self.char_id[d] for d in _DIGITS]
        return digits + ([self.end_id] if frac else [])

    def mask(self, text: str, device: torch.device) -> Tensor:
        """``[V]`` bool, True on the allowed tokens (cached per state)."""
        head, dot, frac = text.partition(".")
        key = f"{head}{dot}{len(frac)}@{device}"
        if key not in self._masks:
            m = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)  # [V]
            m[self.allowed(text)] = True
            self._masks[key] = m
        return self._masks[key]

    def max_tokens(self) -> int:
        """The most tokens an answer takes, ``</answer>`` included."""
        return 1 + (1 + self.decimals if self.decimals else 0) + 1
