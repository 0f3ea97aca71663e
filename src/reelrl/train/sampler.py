"""Seeded, resumable order of training rows: one permutation per epoch."""

from __future__ import annotations

import numpy as np


class RowSampler:
    """Yields batches of row indices; its state (epoch, cursor) is saved in checkpoints.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so resuming from
    a saved state reproduces exactly the batches an uninterrupted run would see.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        if n < 1:
            raise ValueError("no training rows")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch, self.cursor = 0, 0

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next_batch(self) -> list[int]:
        out: list[int] = []
        while len(out) < self.batch_size:
            order = self._order(self.epoch)
            take = min(self.batch_size - len(out), self.n - self.cursor)
            out.extend(int(i) for i in order[self.cursor : self.cursor + take])
            self.cursor += take
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(f"sampler state is for n={state['n']}, seed={state['seed']}; got n={self.n}, seed={self.seed}")
        self.epoch, self.cursor = state["epoch"], state["cursor"]
