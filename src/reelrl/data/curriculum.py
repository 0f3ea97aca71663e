"""Row sources: which training rows each RL step sees (uniform, curricula, filters).

A :class:`RowSource` hands out batches of row indices and may learn from the
rewards of the rows it handed out. Every source is deterministic given its
seed and the history of ``observe`` calls, and its ``state_dict`` holds all
the mutable state, so a resumed run sees exactly the batches an
uninterrupted run would.

Registered in :data:`ROW_SOURCES` as factories ``(rows, batch_size, seed, **kwargs) -> RowSource``:

* ``"uniform"`` -- seeded epoch permutations of all rows (``[seed, epoch]``);
  the SFT and DPO stages read their rows / pairs through it too.
* ``"difficulty_curriculum"`` -- VideoTG-R1-style: rows ordered easiest first,
  a pool that admits harder rows over training, and a masking schedule for
  hard rows (:meth:`DifficultyCurriculum.mask_schedule`).
* ``"staged"`` -- VideoHallu-style stages, each with a row filter and a length
  in steps.
* ``"filter_all_correct"`` -- VerIPO: wraps another source and drops rows whose
  group was all correct, with probability ``drop_frac``.

DAPO dynamic sampling needs refills inside one step, so it is not a source:
it is a group filter (``rl.group_filter``, :data:`reelrl.algos.GROUP_FILTERS`)
whose dropped groups the trainer replaces with more generation batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from reelrl.data.schema import VideoRow
from reelrl.registry import Registry
from reelrl.seeding import rng


@runtime_checkable
class RowSource(Protocol):
    """Hands out row indices and learns from the groups' accuracy / rewards."""

    def next_batch(self, step: int) -> list[int]:
        """Indices (into the row list) of the prompts of optimizer step ``step``."""
        ...

    def observe(self, step: int, indices: list[int], accuracy: np.ndarray, rewards: np.ndarray) -> None:
        """Results of the batch ``indices``: ``accuracy`` and ``rewards`` are ``[B, G]``."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


RowSourceFactory = Callable[..., RowSource]
ROW_SOURCES: Registry[RowSourceFactory] = Registry("row source")


def _check_common(rows: Sequence[VideoRow], batch_size: int, who: str) -> None:
    if len(rows) < 1:
        raise ValueError(f"{who}: no training rows")
    if batch_size < 1:
        raise ValueError(f"{who}: batch_size must be >= 1, got {batch_size}")


def check_observation(
    who: str, n_rows: int, indices: Sequence[int], accuracy: np.ndarray, rewards: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``observe`` call: ``[B, G]`` float arrays with ``B == len(indices)``, indices in range."""
    acc = np.asarray(accuracy, dtype=np.float64)  # [B, G]
    rew = np.asarray(rewards, dtype=np.float64)  # [B, G]
    if acc.ndim != 2 or rew.ndim != 2:
        raise ValueError(f"{who}.observe: accuracy and rewards must be [B, G], got {acc.shape} and {rew.shape}")
    if acc.shape[0] != len(indices) or rew.shape[0] != len(indices):
        raise ValueError(
            f"{who}.observe: {len(indices)} indices but accuracy {acc.shape} and rewards {rew.shape}"
        )
    bad = [i for i in indices if not 0 <= int(i) < n_rows]
    if bad:
        raise ValueError(f"{who}.observe: row indices out of range [0, {n_rows}): {bad}")
    return acc, rew


def _check_state(who: str, state: dict[str, Any], expect: dict[str, Any]) -> None:
    """Refuse a state saved by a different kind of source or for other rows / seed."""
    for k, v in expect.items():
        if state.get(k) != v:
            raise ValueError(f"{who}: state has {k}={state.get(k)!r}, this source has {k}={v!r}")


class _EpochCursor:
    """Epoch permutations of ``pool`` (seeded by ``[*seed_key, epoch]``) read with a cursor."""

    def __init__(self, pool: Sequence[int], seed_key: Sequence[int], shuffle: bool = True) -> None:
        self.pool = np.asarray(pool, dtype=np.int64)  # [P]
        self.seed_key = list(seed_key)
        self.shuffle = shuffle
        self.epoch, self.cursor = 0, 0

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        size = len(self.pool)
        while len(out) < n:
            order = (
                rng(*self.seed_key, self.epoch).permutation(size) if self.shuffle else np.arange(size)
            )  # [P]
            k = min(n - len(out), size - self.cursor)
            out.extend(int(self.pool[j]) for j in order[self.cursor : self.cursor + k])
            self.cursor += k
            if self.cursor >= size:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out


# --------------------------------------------------------------------------- uniform


class UniformSource:
    """Seeded epoch permutations of all rows; ``step`` is ignored (batches follow each other).

    ``shuffle=False`` reads the rows in dataset order, epoch after epoch.
    """

    kind = "uniform"

    def __init__(self, rows: Sequence[VideoRow], batch_size: int, seed: int, shuffle: bool = True) -> None:
        _check_common(rows, batch_size, self.kind)
        self.n, self.batch_size, self.seed = len(rows), batch_size, seed
        self._cur = _EpochCursor(range(self.n), [seed], shuffle=shuffle)

    def next_batch(self, step: int) -> list[int]:
        return self._cur.take(self.batch_size)

    def observe(self, step: int, indices: list[int], accuracy: np.ndarray, rewards: np.ndarray) -> None:
        check_observation(self.kind, self.n, indices, accuracy, rewards)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "seed": self.seed, "epoch": self._cur.epoch, "cursor": self._cur.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state(self.kind, state, {"kind": self.kind, "n": self.n, "seed": self.seed})
        self._cur.epoch, self._cur.cursor = int(state["epoch"]), int(state["cursor"])


@ROW_SOURCES.register("uniform")
def uniform(rows: Sequence[VideoRow], batch_size: int, seed: int, shuffle: bool = True) -> UniformSource:
    """Factory of :class:`UniformSource`."""
    return UniformSource(rows, batch_size, seed, shuffle)


# --------------------------------------------------------------------------- difficulty curriculum

PACINGS: dict[str, Callable[[float], float]] = {
    "linear": lambda t: t,
    "root": math.sqrt,
}


class DifficultyCurriculum:
    """VideoTG-R1-style curriculum: easy rows first, harder rows admitted as training goes on.

    Easiness of a row: ``estimates[row.id]`` when given (e.g. the model's
    zero-shot IoU or accuracy; higher = easier), else ``1 - row.difficulty``.
    Rows are ordered by easiness, easiest first (ties keep dataset order).

    Pool at step ``s``: the first ``max(1, ceil(N * f(s)))`` rows of that order,
    ``f(s) = start_frac + (1 - start_frac) * pace(min(1, s / total_steps))``
    with ``pace`` "linear" (t) or "root" (sqrt t). E.g. N = 10, start_frac 0.2,
    total_steps 100, linear: 2 rows at step 0, 6 at step 50, 10 from step 100.

    Sampling: the ``d``-th call of ``next_batch`` for step ``s`` (``d = 0`` normally;
    a wrapper such as :class:`FilterAllCorrect` may call again for a top-up)
    draws ``batch_size`` distinct rows of the pool with ``default_rng([seed, s, d])``
    (the pool is tiled when smaller than the batch). The only state is the last
    step and ``d``. Unlike epoch permutations this does not guarantee that every
    pool row is seen once per pass.

    Masking (VideoTG-R1 masks part of hard samples' videos, un-masking over
    training; the schedule was not published): rows with easiness below
    ``hard_threshold`` get ``mask_schedule(step, row) = mask_max_frac *
    max(0, 1 - step / unmask_steps)``; other rows 0. The caller turns the
    fraction into :func:`reelrl.video.transforms.mask_span` calls, e.g. over the
    spans of :func:`irrelevant_spans` (away from the annotated moment).
    """

    kind = "difficulty_curriculum"

    def __init__(
        self,
        rows: Sequence[VideoRow],
        batch_size: int,
        seed: int,
        *,
        total_steps: int,
        start_frac: float = 0.3,
        pacing: str = "linear",
        estimates: dict[str, float] | None = None,
        hard_threshold: float = 0.5,
        mask_max_frac: float = 0.5,
        unmask_steps: int | None = None,
    ) -> None:
        _check_common(rows, batch_size, self.kind)
        if total_steps < 1:
            raise ValueError(f"{self.kind}: total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= start_frac <= 1.0:
            raise ValueError(f"{self.kind}: start_frac must lie in [0, 1], got {start_frac}")
        if pacing not in PACINGS:
            raise ValueError(f"{self.kind}: unknown pacing {pacing!r}; valid: {', '.join(sorted(PACINGS))}")
        if not 0.0 <= mask_max_frac <= 1.0:
            raise ValueError(f"{self.kind}: mask_max_frac must lie in [0, 1], got {mask_max_frac}")
        self.n, self.batch_size, self.seed = len(rows), batch_size, seed
        self.total_steps, self.start_frac, self.pacing = total_steps, start_frac, pacing
        self.hard_threshold, self.mask_max_frac = hard_threshold, mask_max_frac
        self.unmask_steps = total_steps if unmask_steps is None else unmask_steps
        if self.unmask_steps < 1:
            raise ValueError(f"{self.kind}: unmask_steps must be >= 1, got {self.unmask_steps}")
        self.easiness: dict[str, float] = {}
        for i, r in enumerate(rows):
            if estimates is not None and r.id in estimates:
                e = float(estimates[r.id])
            elif r.difficulty is not None:
                e = 1.0 - r.difficulty
            else:
                raise ValueError(
                    f"{self.kind}: row {i} (id {r.id!r}) has no difficulty and no entry in the estimates"
                )
            if not math.isfinite(e):
                raise ValueError(f"{self.kind}: row {i} (id {r.id!r}) has a non-finite difficulty estimate {e}")
            self.easiness[r.id] = e
        keys = [-self.easiness[r.id] for r in rows]
        self.order = [int(i) for i in np.argsort(keys, kind="stable")]  # [N] easiest first
        self._last_step, self._draw = -1, 0

    def pool_size(self, step: int) -> int:
        """Number of admitted rows at ``step`` (see class docstring)."""
        t = min(1.0, max(0, step) / self.total_steps)
        f = self.start_frac + (1.0 - self.start_frac) * PACINGS[self.pacing](t)
        return max(1, min(self.n, math.ceil(self.n * f - 1e-9)))

    def pool(self, step: int) -> list[int]:
        """Indices of the admitted rows at ``step``, easiest first."""
        return self.order[: self.pool_size(step)]

    def next_batch(self, step: int) -> list[int]:
        pool = np.asarray(self.pool(step), dtype=np.int64)  # [P]
        if step == self._last_step:
            self._draw += 1
        else:
            self._last_step, self._draw = step, 0
        rand = rng(self.seed, max(0, step), self._draw)
        reps = math.ceil(self.batch_size / len(pool))
        picks = np.concatenate([rand.permutation(len(pool)) for _ in range(reps)])[: self.batch_size]  # [B]
        return [int(pool[j]) for j in picks]

    def is_hard(self, row: VideoRow) -> bool:
        return self.easiness[row.id] < self.hard_threshold

    def mask_schedule(self, step: int, row: VideoRow) -> float:
        """Fraction of ``row``'s video to mask at ``step``: decays linearly to 0 at ``unmask_steps``."""
        if row.id not in self.easiness:
            raise KeyError(f"{self.kind}.mask_schedule: row id {row.id!r} is not in this curriculum")
        if not self.is_hard(row):
            return 0.0
        return self.mask_max_frac * max(0.0, 1.0 - max(0, step) / self.unmask_steps)

    def observe(self, step: int, indices: list[int], accuracy: np.ndarray, rewards: np.ndarray) -> None:
        check_observation(self.kind, self.n, indices, accuracy, rewards)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "seed": self.seed, "last_step": self._last_step, "draw": self._draw}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state(self.kind, state, {"kind": self.kind, "n": self.n, "seed": self.seed})
        self._last_step, self._draw = int(state["last_step"]), int(state["draw"])


@ROW_SOURCES.register("difficulty_curriculum")
def difficulty_curriculum(rows: Sequence[VideoRow], batch_size: int, seed: int, **kwargs: Any) -> DifficultyCurriculum:
    """Factory of :class:`DifficultyCurriculum` (kwargs: its keyword arguments)."""
    return DifficultyCurriculum(rows, batch_size, seed, **kwargs)


def irrelevant_spans(frac: float, span: tuple[float, float], duration: float) -> list[tuple[float, float]]:
    """Spans (fractions of the clip) covering ``frac`` of a video, outside the gold ``span`` seconds.

    The masked time is split between the part before and the part after the
    gold span in proportion to their lengths; the part before is masked from
    its start (away from the moment), the part after up to the end. The total
    is capped by the time available outside the span. Returns 0, 1 or 2
    ``(start_frac, end_frac)`` pairs for :func:`reelrl.video.transforms.mask_span`.
    """
    if duration <= 0:
        raise ValueError(f"irrelevant_spans: duration must be > 0, got {duration}")
    s = min(max(span[0], 0.0), duration) / duration
    e = min(max(span[1], 0.0), duration) / duration
    if e < s:
        raise ValueError(f"irrelevant_spans: span end {span[1]} is before its start {span[0]}")
    before, after = s, 1.0 - e
    outside = before + after
    if frac <= 0 or outside <= 0:
        return []
    m = min(frac, outside)
    out: list[tuple[float, float]] = []
    if before > 0:
        out.append((0.0, m * before / outside))
    if after > 0:
        out.append((1.0 - m * after / outside, 1.0))
    return out


# --------------------------------------------------------------------------- staged


@dataclass(frozen=True)
class Stage:
    """One stage: ``steps`` optimizer steps over the rows matching the filter.

    ``tasks``: ``row.task`` must be one of them (``None``: any task).
    ``meta``: every ``row.meta[key] == value`` (``None``: no condition).
    """

    name: str
    steps: int
    tasks: tuple[str, ...] | None = None
    meta: dict[str, Any] | None = field(default=None, hash=False)

    def matches(self, row: VideoRow) -> bool:
        if self.tasks is not None and row.task not in self.tasks:
            return False
        if self.meta is not None and any(row.meta.get(k, _MISSING) != v for k, v in self.meta.items()):
            return False
        return True

    @classmethod
    def parse(cls, spec: "Stage | dict[str, Any]", i: int) -> "Stage":
        """A stage from a config dict ``{name?, steps, task?: str | list, meta?: dict}``."""
        if isinstance(spec, Stage):
            return spec
        unknown = set(spec) - {"name", "steps", "task", "tasks", "meta"}
        if unknown:
            raise ValueError(f"staged: stage {i}: unknown keys {sorted(unknown)}")
        if "steps" not in spec:
            raise ValueError(f"staged: stage {i}: missing 'steps'")
        task = spec.get("tasks", spec.get("task"))
        tasks = None if task is None else ((task,) if isinstance(task, str) else tuple(task))
        return cls(name=str(spec.get("name", f"stage{i}")), steps=int(spec["steps"]), tasks=tasks, meta=spec.get("meta"))


_MISSING = object()


class StagedSource:
    """VideoHallu-style stages: stage ``k`` covers steps ``[sum_{j<k} steps_j, sum_{j<=k} steps_j)``.

    Within a stage, seeded epoch permutations of the stage's rows (seed key
    ``[seed, k, epoch]``); entering a new stage starts its first epoch. Steps
    past the last stage stay in the last stage.
    """

    kind = "staged"

    def __init__(
        self, rows: Sequence[VideoRow], batch_size: int, seed: int, *, stages: Sequence[Stage | dict[str, Any]]
    ) -> None:
        _check_common(rows, batch_size, self.kind)
        if not stages:
            raise ValueError(f"{self.kind}: needs at least one stage")
        self.stages = [Stage.parse(s, i) for i, s in enumerate(stages)]
        self.n, self.batch_size, self.seed = len(rows), batch_size, seed
        self.pools: list[list[int]] = []
        for i, st in enumerate(self.stages):
            if st.steps < 1:
                raise ValueError(f"{self.kind}: stage {i} ({st.name}) must last >= 1 step, got {st.steps}")
            pool = [j for j, r in enumerate(rows) if st.matches(r)]
            if not pool:
                raise ValueError(f"{self.kind}: stage {i} ({st.name}) matches no row (tasks={st.tasks}, meta={st.meta})")
            self.pools.append(pool)
        self.ends = list(np.cumsum([st.steps for st in self.stages]))  # [S] first step after each stage
        self._stage = 0
        self._cur = _EpochCursor(self.pools[0], [seed, 0])

    def stage_at(self, step: int) -> int:
        """Index of the stage that ``step`` belongs to."""
        for k, end in enumerate(self.ends):
            if step < end:
                return k
        return len(self.stages) - 1

    def next_batch(self, step: int) -> list[int]:
        k = self.stage_at(step)
        if k != self._stage:
            self._stage = k
            self._cur = _EpochCursor(self.pools[k], [self.seed, k])
        return self._cur.take(self.batch_size)

    def observe(self, step: int, indices: list[int], accuracy: np.ndarray, rewards: np.ndarray) -> None:
        check_observation(self.kind, self.n, indices, accuracy, rewards)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n": self.n,
            "seed": self.seed,
            "n_stages": len(self.stages),
            "stage": self._stage,
            "epoch": self._cur.epoch,
            "cursor": self._cur.cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state(self.kind, state, {"kind": self.kind, "n": self.n, "seed": self.seed, "n_stages": len(self.stages)})
        self._stage = int(state["stage"])
        self._cur = _EpochCursor(self.pools[self._stage], [self.seed, self._stage])
        self._cur.epoch, self._cur.cursor = int(state["epoch"]), int(state["cursor"])


@ROW_SOURCES.register("staged")
def staged(rows: Sequence[VideoRow], batch_size: int, seed: int, *, stages: Sequence[Any]) -> StagedSource:
    """Factory of :class:`StagedSource` (``stages``: list of :class:`Stage` or config dicts)."""
    return StagedSource(rows, batch_size, seed, stages=stages)


# --------------------------------------------------------------------------- VerIPO filter


class FilterAllCorrect:
    """VerIPO: drop rows whose group was all correct from future sampling, with probability ``drop_frac``.

    VerIPO drops 80% of the groups whose mean accuracy is 1. Here the decision
    is applied to the *row*: after ``observe``, each row whose whole group had
    ``accuracy >= 1`` is removed from the pool (for the rest of training) with
    probability ``drop_frac``; rows with any incorrect completion are never
    dropped. Each decision uses ``default_rng([seed, 1, step, row])``, so it
    depends only on the seed, the step and the row (exact on resume).

    Batches come from the wrapped source; dropped rows are skipped and the
    batch is topped up from further batches of the wrapped source. Rows drawn
    but not needed wait in a carry-over queue (part of the state) for the next
    batch. Raises ``RuntimeError`` when the wrapped source only yields dropped
    rows for ``max_pulls`` consecutive batches (e.g. every row was dropped).
    """

    kind = "filter_all_correct"

    def __init__(
        self, inner: RowSource, n_rows: int, batch_size: int, seed: int, *, drop_frac: float = 0.8, max_pulls: int = 1000
    ) -> None:
        if not 0.0 <= drop_frac <= 1.0:
            raise ValueError(f"{self.kind}: drop_frac must lie in [0, 1], got {drop_frac}")
        self.inner, self.n, self.batch_size, self.seed = inner, n_rows, batch_size, seed
        self.drop_frac, self.max_pulls = drop_frac, max_pulls
        self.dropped: set[int] = set()
        self._carry: list[int] = []

    def next_batch(self, step: int) -> list[int]:
        out: list[int] = []
        queue = [i for i in self._carry if i not in self.dropped]
        empty_pulls = 0
        while len(out) < self.batch_size:
            if not queue:
                queue = [i for i in self.inner.next_batch(step) if i not in self.dropped]
                empty_pulls = empty_pulls + 1 if not queue else 0
                if empty_pulls >= self.max_pulls:
                    raise RuntimeError(
                        f"{self.kind}: the wrapped source yielded only dropped rows for {self.max_pulls} batches "
                        f"({len(self.dropped)} of {self.n} rows dropped)"
                    )
                continue
            out.append(queue.pop(0))
        self._carry = queue
        return out

    def observe(self, step: int, indices: list[int], accuracy: np.ndarray, rewards: np.ndarray) -> None:
        acc, _ = check_observation(self.kind, self.n, indices, accuracy, rewards)  # [B, G]
        all_correct = np.all(acc >= 1.0, axis=1)  # [B]
        for b, i in enumerate(indices):
            if all_correct[b] and rng(self.seed, 1, step, int(i)).random() < self.drop_frac:
                self.dropped.add(int(i))
        self.inner.observe(step, indices, accuracy, rewards)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n": self.n,
            "seed": self.seed,
            "dropped": sorted(self.dropped),
            "carry": list(self._carry),
            "inner": self.inner.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state(self.kind, state, {"kind": self.kind, "n": self.n, "seed": self.seed})
        self.dropped = {int(i) for i in state["dropped"]}
        self._carry = [int(i) for i in state["carry"]]
        self.inner.load_state_dict(state["inner"])


@ROW_SOURCES.register("filter_all_correct")
def filter_all_correct(
    rows: Sequence[VideoRow],
    batch_size: int,
    seed: int,
    *,
    inner: str = "uniform",
    inner_kwargs: dict[str, Any] | None = None,
    drop_frac: float = 0.8,
) -> FilterAllCorrect:
    """Factory: ``ROW_SOURCES[inner](rows, batch_size, seed, **inner_kwargs)`` wrapped in :class:`FilterAllCorrect`."""
    if inner == "filter_all_correct":
        raise ValueError("filter_all_correct: cannot wrap itself")
    _check_common(rows, batch_size, "filter_all_correct")
    src = ROW_SOURCES.get(inner)(rows, batch_size, seed, **(inner_kwargs or {}))
    return FilterAllCorrect(src, len(rows), batch_size, seed, drop_frac=drop_frac)
