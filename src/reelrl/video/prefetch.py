"""Load the next work items in background threads while the consumer works on the current one.

Typical use: decode the frames of the next batch while the model trains on
this one (PyAV and PIL release the GIL while decoding and resizing)::

    with Prefetcher(batches, load_batch_frames, ahead=2) as frames_iter:
        for frames in frames_iter:
            step(frames)
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class Prefetcher(Generic[T, R]):
    """Iterate ``load(item)`` for each item of ``items``, computed up to ``ahead`` items early.

    * Results come out in the order of ``items``, whatever order the workers finish in.
    * At most ``ahead`` loads are submitted beyond the result being consumed
      (a bounded queue): ``items`` is pulled lazily, in the consumer's thread, so a
      non-thread-safe iterator is fine.
    * A load that raises re-raises its exception in the consumer when its
      result is reached (earlier results are delivered first); iteration may
      continue with the next item afterwards. An exception from ``items``
      itself is raised at the position it occurred.
    * Loading starts on construction. :meth:`close` (or leaving the ``with``
      block) cancels the loads not started yet and waits for running ones.

    Args:
        items: work items.
        load: function applied to each item in a worker thread.
        ahead: how many items are loaded ahead (>= 1).
        workers: worker threads (>= 1; default 1, enough to hide one loader behind compute).
    """

    def __init__(self, items: Iterable[T], load: Callable[[T], R], ahead: int = 2, workers: int = 1) -> None:
        if ahead < 1:
            raise ValueError(f"Prefetcher: ahead must be >= 1, got {ahead}")
        if workers < 1:
            raise ValueError(f"Prefetcher: workers must be >= 1, got {workers}")
        self._items: Iterator[T] = iter(items)
        self._load = load
        self._ahead = ahead
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prefetch")
        self._queue: deque[Future[R] | BaseException | object] = deque()
        self._exhausted = False
        self._fill()

    def _fill(self) -> None:
        """Submit loads until ``ahead`` are queued or ``items`` runs out."""
        while self._pool is not None and not self._exhausted and len(self._queue) < self._ahead:
            try:
                item = next(self._items)
            except StopIteration:
                self._exhausted = True
                self._queue.append(_DONE)
            except Exception as e:  # the items iterator failed: report it in order
                self._exhausted = True
                self._queue.append(e)
            else:
                self._queue.append(self._pool.submit(self._load, item))

    def __iter__(self) -> "Prefetcher[T, R]":
        return self

    def __next__(self) -> R:
        if self._pool is None or not self._queue:
            raise StopIteration
        head = self._queue.popleft()
        if head is _DONE:
            self._queue.appendleft(head)  # stay exhausted
            raise StopIteration
        if isinstance(head, BaseException):
            raise head
        self._fill()  # keep `ahead` loads in flight while the consumer works on this one
        assert isinstance(head, Future)
        return head.result()  # re-raises the load's exception here

    def close(self) -> None:
        """Cancel loads not started, wait for running ones, drop queued results. Idempotent."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        for f in self._queue:
            if isinstance(f, Future):
                f.cancel()
        self._queue.clear()
        pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Prefetcher[T, R]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
