"""Metrics sinks: a JSONL file, TensorBoard events, optionally wandb; a JSONL record log; and a step timer."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Writes each step's scalars to ``metrics.jsonl`` and TensorBoard (and wandb when asked)."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, wandb: bool = False, project: str = "reelrl",
                 config: dict | None = None, prefix: str = "", enabled: bool = True) -> None:
        """``enabled=False`` (every rank but 0 of a distributed run) writes nothing at all."""
        self.run_dir = Path(run_dir)
        self.prefix = prefix
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
        if wandb:
            try:
                import wandb as _wandb
            except ImportError:
                print("wandb requested but not installed; logging to JSONL and TensorBoard only")
            else:
                self._wandb = _wandb.init(project=project, dir=str(self.run_dir), config=config or {})

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self._jsonl is None:
            return
        clean = {f"{self.prefix}{k}": (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        self._jsonl.flush()
        for k, v in clean.items():
            if isinstance(v, float) and math.isfinite(v):
                if self._tb is not None:
                    self._tb.add_scalar(k, v, step)
        if self._tb is not None:
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        if self._jsonl is None:
            return
        self._jsonl.close()
        self._jsonl = None
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


class RecordLog:
    """Appends JSON records (one per line) to one file, such as a stage's ``samples.jsonl``.

    ``enabled=False`` (every rank but 0 of a distributed run, ``ParallelDims.is_main``) writes nothing. Floats
    that are not finite are written as ``null``, so that every line is strict JSON (browsers read it).
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write(self, records: list[dict[str, Any]]) -> None:
        if not self.enabled or not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(_finite(r), allow_nan=False) + "\n")


def _finite(x: Any) -> Any:
    """``x`` with every non-finite float replaced by None (in nested dicts and lists)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class Timer:
    """Accumulates wall time per named phase: ``with timer("rollout"): ...``."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - t0

    def pop(self) -> dict[str, float]:
        out = {f"time/{k}": v for k, v in self.totals.items()}
        self.totals = defaultdict(float)
        return out
