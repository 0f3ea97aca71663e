"""The registry of benchmark adapters: name -> :class:`~reelrl.eval.bench.base.Benchmark` subclass."""

from __future__ import annotations

from reelrl.registry import Registry

BENCHMARKS: Registry = Registry("benchmark")
