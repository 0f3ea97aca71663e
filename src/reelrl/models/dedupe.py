"""Identical visual inputs of one tower call encoded once (:func:`encode_unique`).

The G trajectories of a streaming (VST) group are shown the same clips, and
several trajectories of a Scene-R1 group may be shown the same frame; their
later-turn inputs reach the tower in one call (:meth:`reelrl.models.vlm.VLM.encode_videos`,
:meth:`~reelrl.models.vlm.VLM.encode_images`), where the copies need one encode.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

__all__ = ["encode_unique"]


def encode_unique(
    encode: Callable[[Tensor, Tensor], BaseModelOutputWithPooling], pixels: Tensor, grid: Tensor
) -> BaseModelOutputWithPooling:
    """``encode(pixels, grid)`` with identical visual inputs run through the tower once.

    ``pixels [N, d]`` holds the patches of ``k`` inputs (``grid [k, 3]``, ``t*h*w``
    rows each, as the processor writes them). Inputs with the same grid row and
    equal patches (a cheap fingerprint, then ``torch.equal``) are encoded once,
    in one call over the unique ones, and the output's ``pooler_output`` (one
    ``[tokens, D]`` tensor per input) repeats the shared embedding for every
    copy, in input order: the same tensors as one call over all ``k`` (up to the
    float rounding of a differently sized batch), and under autograd the copies'
    gradients sum into the one encode, as they would over separate encodes.
    Outputs with other per-input fields fall back to the plain call.
    ``last_hidden_state`` (the unsplit patch-level output, not read once pooled) is None when inputs were shared.
    """
    sizes = grid.prod(-1).tolist()  # patches per input
    chunks = torch.split(pixels, sizes)  # k x [n_i, d]
    reps: list[int] = []  # the first input of each distinct content
    which: list[int] = []  # for each input, its slot in reps
    seen: dict[tuple, list[int]] = {}
    for i, c in enumerate(chunks):
        key = (tuple(grid[i].tolist()), float(c.sum()), float(c[::7].sum()))
        slot = next((s for s in seen.get(key, ()) if torch.equal(chunks[reps[s]], c)), None)
        if slot is None:
            slot = len(reps)
            reps.append(i)
            seen.setdefault(key, []).append(slot)
        which.append(slot)
    if len(reps) == len(chunks):
        return encode(pixels, grid)
    out = encode(torch.cat([chunks[i] for i in reps]), grid[reps])  # [sum of unique n_i, d]
    if any(out[k] is not None for k in out.keys() if k not in ("last_hidden_state", "pooler_output")):
        return encode(pixels, grid)
    pooled = out.pooler_output
    return type(out)(last_hidden_state=None, pooler_output=tuple(pooled[s] for s in which))
