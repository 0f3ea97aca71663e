"""Progress-critic metrics (PRIMO R1): progress MAE and failure-detection accuracy per task.

``progress`` rows (``problem_type: progress``): the greedy answer's absolute
error against the gold progress, on the row's range (``meta["progress_range"]``,
default [0, 1]), capped at the range, an unparseable answer counting as the
whole range (:func:`reelrl.rewards.progress.progress_error`; then
``mae / range == 1 - accuracy``). Reported per task as ``mae`` (every row),
``mae_parsed`` (the rows whose answer is one number; None if none) and
``parsed`` (their share). PRIMO R1 reports the MAE in percentage points; on the
gym's [0, 1] scale multiply by 100.

Failure-detection rows (``meta["failure_detection"]`` true: "did the task
fail / will it succeed", a choice question): ``accuracy`` is the share of
strictly right answers (the ``accuracy`` reward), as RoboFail's accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from reelrl.data.answers import extract_tag
from reelrl.data.schema import VideoRow, progress_range
from reelrl.rewards.progress import parse_progress, progress_error

__all__ = ["add_critic", "failure_metrics", "progress_metrics"]


def progress_metrics(rows: list[VideoRow], texts: list[str]) -> dict[str, dict[str, Any]]:
    """Per task with ``progress`` rows: ``{"n", "mae", "mae_parsed", "parsed", "range"}`` (module docstring)."""
    by_task: dict[str, list[tuple[float, bool, float]]] = defaultdict(list)
    ranges: dict[str, tuple[float, float]] = {}
    for row, text in zip(rows, texts, strict=True):
        if row.problem_type != "progress":
            continue
        lo, hi = progress_range(row.meta)
        pred = parse_progress(extract_tag(text), lo, hi)
        by_task[row.task].append((progress_error(pred, float(row.answer), lo, hi), pred is not None, hi - lo))
        ranges.setdefault(row.task, (lo, hi))
    out = {}
    for task, errs in sorted(by_task.items()):
        parsed = [e for e, ok, _ in errs if ok]
        out[task] = {"n": len(errs), "mae": sum(e for e, _, _ in errs) / len(errs),
                     "mae_parsed": sum(parsed) / len(parsed) if parsed else None,
                     "parsed": len(parsed) / len(errs), "range": list(ranges[task])}
    return out


def failure_metrics(rows: list[VideoRow], accuracy: list[float]) -> dict[str, dict[str, Any]]:
    """Per task with failure-detection rows: ``{"n", "accuracy"}``."""
    by_task: dict[str, list[float]] = defaultdict(list)
    for row, acc in zip(rows, accuracy, strict=True):
        if (row.meta or {}).get("failure_detection") is True:
            by_task[row.task].append(float(acc))
    return {t: {"n": len(v), "accuracy": sum(v) / len(v)} for t, v in sorted(by_task.items())}


def add_critic(result: dict[str, Any], rows: list[VideoRow], texts: list[str], accuracy: list[float]) -> dict[str, Any]:
    """Put :func:`progress_metrics` / :func:`failure_metrics` into ``result["per_task"][task]["progress"]`` /
    ``["failure_detection"]`` (tasks that have such rows only)."""
    per = result.get("per_task", {})
    for task, stats in progress_metrics(rows, texts).items():
        if task in per:
            per[task]["progress"] = stats
    for task, stats in failure_metrics(rows, accuracy).items():
        if task in per:
            per[task]["failure_detection"] = stats
    return result
