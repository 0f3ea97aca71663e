"""Run one benchmark: greedy decoding sharded over the data-parallel ranks, resumable, scored both ways.

Output directory::

    run.json                  what produced the samples (benchmark, model, prompt, sampling); a rerun must match
    samples.jsonl             one record per sample, appended as samples finish (one process); at the end
                              rewritten complete, deduplicated and in benchmark order
    samples.rank<k>.jsonl     the same, per data-parallel rank, while a distributed run is under way (merged
                              into samples.jsonl at its end)
    summary.json              the scores (written at the end of every invocation, also of a partial one)

A sample record: ``id``, ``answer`` (gold), ``completion``, ``length``
(tokens), ``fields`` (the benchmark's breakdown fields), ``strict`` and
``benchmark`` (the two judgements, :mod:`reelrl.eval.bench.base`).

Resuming: every rank reads the ids already in ``samples*.jsonl`` (a torn last
line from an interruption is ignored and cut off before appending), and the
remaining rows are shared over the dp ranks with
:meth:`reelrl.dist.parallel.ParallelDims.share`; a killed run loses at most the
batch in flight. ``summary.json``: ``bench``, ``title``, ``model``, ``prompt``,
``n`` (samples scored), ``n_rows`` (rows asked for: all, or the first
``limit``), ``n_total`` (rows in the benchmark), ``complete``, ``skipped``
(row id -> why its video could not be read), ``mean_length``, and
``scores``: ``{"strict": ..., "benchmark": ...}``, each the benchmark's own
summary (:meth:`~reelrl.eval.bench.base.Benchmark.summarize`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow
from reelrl.dist.parallel import ParallelDims
from reelrl.eval.bench.base import MODES, Benchmark
from reelrl.eval.runner import decode_rows
from reelrl.monitor.progress import progress_bar
from reelrl.rollout.engine import RolloutEngine
from reelrl.rollout.hf import SamplingParams

SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"
SETTINGS = "run.json"


class SettingsMismatch(FileExistsError):
    """An output directory holds samples produced with other settings."""


def sample_files(out_dir: Path) -> list[Path]:
    """``samples.jsonl`` and the per-rank files, in a fixed order."""
    return sorted(p for p in out_dir.glob("samples*.jsonl") if p.is_file())


def read_samples(out_dir: Path) -> dict[str, dict]:
    """Every complete sample record under ``out_dir`` by id (the first of duplicates wins; torn lines skipped)."""
    done: dict[str, dict] = {}
    for path in sample_files(out_dir):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            if isinstance(rec, dict) and "id" in rec:
                done.setdefault(str(rec["id"]), rec)
    return done


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (an append interrupted mid-write), so appends start on a new line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def check_settings(out_dir: Path, settings: dict[str, Any], overwrite: bool, dims: ParallelDims) -> None:
    """Write ``run.json``; refuse (every rank) an existing one with other settings unless ``overwrite``, which
    removes the old samples."""
    path = out_dir / SETTINGS
    old = json.loads(path.read_text()) if path.is_file() else None
    if old is not None and old != settings and not overwrite:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(old) | set(settings))
                         if old.get(k) != settings.get(k))
        raise SettingsMismatch(f"{out_dir} holds samples of another benchmark run ({diff}); pass another --out, "
                               "or --overwrite to discard them")
    dims.barrier()
    if dims.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if overwrite and old != settings:
            for p in [*sample_files(out_dir), out_dir / SUMMARY]:
                p.unlink(missing_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")
    dims.barrier()


def record(bench: Benchmark, row: VideoRow, text: str, length: int) -> dict[str, Any]:
    """One sample's record (module docstring)."""
    return {"id": row.id, "answer": row.answer, "completion": text, "length": length,
            "fields": row.meta.get("fields", {}), **{mode: bench.judge(text, row, mode) for mode in MODES}}


@torch.no_grad()
def run_benchmark(
    bench: Benchmark,
    rows: list[VideoRow],
    vlm,
    tokenizer,
    encoder: PromptEncoder,
    sampling: SamplingParams,
    out_dir: Path,
    settings: dict[str, Any],
    *,
    limit: int | None = None,
    overwrite: bool = False,
    batch_size: int = 8,
    dims: ParallelDims | None = None,
    engine: RolloutEngine | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode the rows not yet in ``out_dir`` (the first ``limit`` rows only, if given), append their records,
    then merge and score everything done; returns the summary (the same on every rank)."""
    dims = dims if dims is not None else ParallelDims()
    out_dir = Path(out_dir)
    check_settings(out_dir, settings, overwrite, dims)
    wanted = rows[:limit] if limit is not None else rows
    done = set(read_samples(out_dir))
    dims.barrier()  # every rank has read the done ids before any appends
    mine = dims.share([r for r in wanted if r.id not in done])
    writer = dims.sp_rank == 0  # sequence-parallel peers decode the same rows; one of them writes
    path = out_dir / (SAMPLES if dims.dp == 1 else f"samples.rank{dims.dp_rank}.jsonl")
    if writer:
        _cut_torn_tail(path)
    local = ParallelDims(device=dims.device)  # this rank's share is decoded locally
    with progress_bar(f"{bench.title}", len(mine), progress and dims.is_main) as bar:
        for s in range(0, len(mine), batch_size):
            chunk = mine[s : s + batch_size]
            samples = decode_rows(vlm, tokenizer, encoder, chunk, sampling, progress=False, batch_size=batch_size,
                                  dims=local, engine=engine)
            if writer and samples:
                with path.open("a", encoding="utf-8") as f:
                    for row, text, n in samples:
                        f.write(json.dumps(record(bench, row, text, n), ensure_ascii=False) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            for _ in chunk:
                bar.advance()
    skipped = {k: v for part in dims.gather(dict(encoder.skipped)) for k, v in part.items()}
    dims.barrier()
    summary = None
    if dims.is_main:
        summary = finish(bench, rows, wanted, out_dir, settings, skipped)
    return dims.broadcast(summary)


def finish(bench: Benchmark, rows: list[VideoRow], wanted: list[VideoRow], out_dir: Path,
           settings: dict[str, Any], skipped: dict[str, str]) -> dict[str, Any]:
    """Merge the sample files into ``samples.jsonl`` (benchmark order, no duplicates) and write ``summary.json``."""
    done = read_samples(out_dir)
    order = {r.id: i for i, r in enumerate(rows)}
    merged = sorted(done.values(), key=lambda rec: (order.get(str(rec["id"]), len(order)), str(rec["id"])))
    tmp = out_dir / (SAMPLES + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in merged:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_dir / SAMPLES)
    for p in sample_files(out_dir):
        if p.name != SAMPLES:
            p.unlink()
    ids = {r.id for r in wanted}
    scored = [rec for rec in merged if str(rec["id"]) in ids]
    summary = {
        "bench": bench.name, "title": bench.title, "model": settings.get("model"), "prompt": settings.get("prompt"),
        "n": len(scored), "n_rows": len(wanted), "n_total": len(rows), "complete": len(scored) == len(rows),
        "skipped": {k: v for k, v in skipped.items() if k in ids and k not in done},
        "mean_length": sum(r["length"] for r in scored) / len(scored) if scored else None,
        "scores": {mode: bench.summarize(scored, mode) if scored else None for mode in MODES},
    }
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
