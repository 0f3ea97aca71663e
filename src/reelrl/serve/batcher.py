"""The batching queue between the HTTP handlers and the critic.

Handlers :meth:`Batcher.submit` a frame and await its result; one worker thread
owns the model. It takes the oldest queued frame, waits up to ``max_wait_s``
for more (or not at all when frames are already waiting), and runs up to
``max_batch`` frames of *distinct* episodes as one batch
(:meth:`reelrl.serve.critic.ProgressCritic.add_frames`); a second frame of an
episode already in the batch stays queued, in order, for the next one. Under
load the queue fills while a batch runs, so batches form by themselves
(continuous batching). At most ``max_queue`` frames wait; beyond that a frame
is refused (:class:`~reelrl.serve.errors.CapacityError`, 429).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from reelrl.serve.critic import FrameResult, ProgressCritic
from reelrl.serve.errors import CapacityError

__all__ = ["Batcher"]

log = logging.getLogger(__name__)


@dataclass
class _Job:
    episode_id: str
    frame: np.ndarray
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    queued: float


class Batcher:
    """One worker thread running queued frames through the critic in batches (module docstring)."""

    def __init__(self, critic: ProgressCritic, max_batch: int = 16, max_wait_s: float = 0.002,
                 max_queue: int = 256) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be >= 1, "
                             f"max_wait_s ({max_wait_s}) >= 0")
        self.critic, self.max_batch, self.max_wait_s, self.max_queue = critic, max_batch, max_wait_s, max_queue
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.stats = {"batches": 0, "frames": 0, "max_batch_seen": 0, "errors": 0}

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="reelrl-serve-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -------------------------------------------------------------- submit
    async def submit(self, episode_id: str, frame: np.ndarray) -> FrameResult:
        """Queue a frame and wait for its result (raises the :class:`ServeError` that refused it)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise CapacityError(f"the server has {len(self._queue)} frames queued, its limit (max_queue); "
                                    "retry shortly")
            self._queue.append(_Job(episode_id, frame, loop, fut, time.monotonic()))
            self._cond.notify()
        result = await fut
        if isinstance(result, BaseException):
            raise result
        return result

    # -------------------------------------------------------------- worker
    def _take(self) -> list[_Job] | None:
        """Wait for work and take one batch of distinct episodes (None: stopping)."""
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, rest, seen = [], deque(), set()
            while self._queue:
                job = self._queue.popleft()
                if len(batch) < self.max_batch and job.episode_id not in seen:
                    batch.append(job)
                    seen.add(job.episode_id)
                else:
                    rest.append(job)
            self._queue = rest
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                results = self.critic.add_frames([(j.episode_id, j.frame) for j in batch])
            except Exception as e:  # a model failure fails this batch, not the server
                log.exception("batch of %d frames failed", len(batch))
                self.stats["errors"] += 1
                results = [e] * len(batch)
            self.stats["batches"] += 1
            self.stats["frames"] += len(batch)
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
            for job, res in zip(batch, results):
                job.loop.call_soon_threadsafe(_resolve, job.future, res)


def _resolve(fut: asyncio.Future, result: FrameResult | BaseException) -> None:
    if not fut.done():  # the request may have gone (client disconnected)
        fut.set_result(result)

