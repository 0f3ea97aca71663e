"""Every random stream of a run is derived from an integer key with numpy's SeedSequence.

A key is the run seed followed by integers that say where the stream is used
(stage step, row index, a tag naming the hook...), e.g. ``(seed, step, row,
TAG_SHUFFLE)``. The same key always gives the same stream, whatever else the
run did, so a resumed run and an uninterrupted one make the same choices, and
a group's tokens do not depend on which other groups share its batch.

- :func:`rng` -- a numpy Generator for the key (``np.random.default_rng(key)``).
- :func:`seed_of` -- a 32-bit integer seed for the key (for torch generators,
  and for transforms whose name must carry their seed).
- :func:`seed_everything` -- the global Python / numpy / torch RNGs of a stage.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def _sequence(key: tuple[int, ...]) -> np.random.SeedSequence:
    if not key:
        raise ValueError("a seed key needs at least one integer")
    return np.random.SeedSequence([int(k) for k in key])


def rng(*key: int) -> np.random.Generator:
    """The numpy Generator of ``key`` (identical to ``np.random.default_rng(list(key))``)."""
    return np.random.default_rng(_sequence(key))


def seed_of(*key: int) -> int:
    """A 32-bit seed derived from ``key`` (the first word of its SeedSequence state)."""
    return int(_sequence(key).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (done at the start of every stage)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
