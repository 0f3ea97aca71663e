"""A rollout engine that answers by rote, so that a short run has both right and wrong completions to report.

Completion ``i`` of every request is ``<answer>L</answer>`` with ``L`` the ``i``-th of ``letters`` (cycling):
in a group of 4 completions of a 4-option row exactly one is right; an evaluation (one completion) answers the
first letter. The trainer scores and trains on these tokens as on any rollout.
"""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from reelrl.rollout.engine import KVCacheEngine
from reelrl.rollout.hf import Rollout


class RoteEngine(KVCacheEngine):
    def __init__(self, vlm, share_prefix=True, tokenizer="", letters="ABCD"):
        super().__init__(vlm, share_prefix)
        self.tok = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
        self.letters = letters

    def generate(self, requests, params):
        out = []
        for r in requests:
            seqs = [self.tok.encode(f"<answer>{self.letters[i % len(self.letters)]}</answer>",
                                    add_special_tokens=False)[: params.max_new_tokens] for i in range(r.n)]
            width = max(len(s) for s in seqs)
            tokens = torch.full((r.n, width), params.pad_id, dtype=torch.long)  # [n, T]
            mask = torch.zeros(r.n, width)  # [n, T]
            for i, s in enumerate(seqs):
                tokens[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1.0
            out.append(Rollout(tokens, mask, torch.tensor([len(s) for s in seqs]), torch.zeros(r.n, dtype=torch.bool)))
        return out
