"""Progress sources: what answers "how much of the task is done" after each frame of a batch of episodes.

Both take the episodes' frames and the environment (for the true state) and
return one progress in [0, 1] per episode and frame, so a trainer cannot tell
them apart; the true source reads the state, the served one only the frames.

:class:`ServedProgress` talks to ``reelrl serve`` over HTTP with
:class:`reelrl.serve.client.ProgressClient`: one server episode per
environment episode, opened on :meth:`start` and closed on :meth:`finish`;
the frames of one step go out concurrently (one client per thread), so the
server batches them into one forward pass.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from reelrl.online.reach import ReachEnv
from reelrl.serve.client import EpisodeHandle, ProgressClient

__all__ = ["ProgressSource", "ServedProgress", "TrueProgress"]


class ProgressSource(Protocol):
    """``start`` a batch of episodes, ``observe`` each new frame batch, ``finish``."""

    name: str

    def start(self, goal: str, n: int) -> None: ...

    def observe(self, frames: np.ndarray, env: ReachEnv) -> np.ndarray: ...

    def finish(self) -> None: ...


class TrueProgress:
    """The environment's true progress (:meth:`ReachEnv.true_progress`); the frames are not read."""

    name = "true"

    def start(self, goal: str, n: int) -> None:
        pass

    def observe(self, frames: np.ndarray, env: ReachEnv) -> np.ndarray:
        """``frames [n, H, W, 3]`` -> progress ``[n]``."""
        return env.true_progress()

    def finish(self) -> None:
        pass


class ServedProgress:
    """Progress answered by ``reelrl serve`` at ``url`` from the frames alone."""

    name = "served"

    def __init__(self, url: str, workers: int = 16, timeout_s: float = 120.0) -> None:
        self.url, self.workers = url, workers
        self._clients = [ProgressClient(url, timeout_s) for _ in range(workers)]
        self._pool = ThreadPoolExecutor(workers)
        self._episodes: list[EpisodeHandle] = []
        self.health = self._clients[0].health()  # fails fast when no server answers

    def start(self, goal: str, n: int) -> None:
        self.finish()
        self._episodes = [self._clients[i % self.workers].episode(goal) for i in range(n)]

    def observe(self, frames: np.ndarray, env: ReachEnv) -> np.ndarray:
        """``frames [n, H, W, 3]``: frame ``i`` extends server episode ``i``; the progress answers ``[n]``."""
        if len(frames) != len(self._episodes):
            raise ValueError(f"ServedProgress.observe: {len(frames)} frames for {len(self._episodes)} open episodes")
        return np.array(list(self._pool.map(lambda ef: ef[0].add_frame(np.ascontiguousarray(ef[1])),
                                            zip(self._episodes, frames))))

    def finish(self) -> None:
        for ep in self._episodes:
            ep.__exit__(None, None, None)
        self._episodes = []

    def close(self) -> None:
        self.finish()
        self._pool.shutdown()
        for c in self._clients:
            c.close()
