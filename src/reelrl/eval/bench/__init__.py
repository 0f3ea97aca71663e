"""Public video benchmarks with their published files, official prompts, answer extraction and scoring.

One module per benchmark, each a :class:`~reelrl.eval.bench.base.Benchmark`
registered in :data:`BENCHMARKS` under the name ``reelrl eval --bench NAME``
takes: ``videomme``, ``mvbench``, ``vsibench``, ``longvideobench``, ``mmvu``,
``clevrer``, ``video_holmes``. :func:`reelrl.eval.bench.run.run_benchmark`
decodes (with :func:`reelrl.eval.runner.decode_rows`), shards, resumes and
scores.
"""

from reelrl.eval.bench import clevrer, longvideobench, mmvu, mvbench, video_holmes, videomme, vsibench  # noqa: F401
from reelrl.eval.bench.base import MODES, Benchmark
from reelrl.eval.bench.registry import BENCHMARKS


def get_benchmark(name: str) -> Benchmark:
    """The adapter registered as ``name`` (KeyError listing the valid names)."""
    return BENCHMARKS.get(name)()


__all__ = ["BENCHMARKS", "MODES", "Benchmark", "get_benchmark"]
