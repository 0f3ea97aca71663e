"""What a report reads from a run directory (layout in :mod:`reelrl.pipeline`): stages, metrics, evals, samples.

Nothing here trains or decodes: a finished, interrupted or running run directory is read as it is on disk.
Bad input raises :class:`ReportError` naming the path (not a run directory, no stage, a malformed line).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGE_DIR = re.compile(r"^(\d+)-(sft|eval|rl|dpo)$")
#: how a training stage names the model after it (as the run's summary rows do)
STAGE_LABEL = {"sft": "SFT", "rl": "GRPO", "dpo": "DPO"}


class ReportError(ValueError):
    """A run directory (or one of its files) a report cannot be made from; the message names the path."""


@dataclass
class EvalResult:
    """One evaluation: its ``eval.json`` summary and ``eval_samples.jsonl`` records (``level``: eval.levels name)."""

    dir: Path
    level: str | None
    summary: dict[str, Any]
    samples: list[dict[str, Any]]


@dataclass
class Stage:
    """One ``<i>-<kind>`` folder: training metrics and sampled groups, or evaluations."""

    index: int
    kind: str
    dir: Path
    label: str  # the model after this stage (training) or the model evaluated (eval)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, one dict per step
    groups: list[dict[str, Any]] = field(default_factory=list)  # samples.jsonl (RL stages)
    pairs: list[dict[str, Any]] = field(default_factory=list)  # pairs.jsonl (DPO stages: the preference pairs)
    evals: list[EvalResult] = field(default_factory=list)  # eval stages: one, or one per level
    done: bool = False

    @property
    def name(self) -> str:
        return self.dir.name


@dataclass
class Run:
    """A run directory as a report sees it."""

    dir: Path
    config: dict[str, Any]
    stages: list[Stage]
    summary: dict[str, Any] | None

    @property
    def title(self) -> str:
        return f"{self.config.get('name', self.dir.name)} (seed {self.config.get('seed', '?')})"

    def training(self) -> list[Stage]:
        return [s for s in self.stages if s.kind != "eval"]

    def evaluations(self) -> list[Stage]:
        return [s for s in self.stages if s.kind == "eval" and s.evals]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file; a line that is not a JSON object is a ReportError naming ``file:line``.

    A last line without its newline that does not parse (a run writing it right now) is left out.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{path}: cannot read ({e.strerror})") from None
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # an unfinished last line
                break
            raise ReportError(f"{path}:{i}: not JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise ReportError(f"{path}:{i}: a JSON object per line expected, got {type(rec).__name__}")
        out.append(rec)
    return out


def read_json(path: Path) -> dict[str, Any]:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ReportError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(rec, dict):
        raise ReportError(f"{path}: a JSON object expected")
    return rec


def _evals(stage_dir: Path) -> list[EvalResult]:
    """The evaluation in ``stage_dir``, or one per level subfolder (``eval.levels``)."""
    dirs = [(stage_dir, None)] if (stage_dir / "eval.json").is_file() else [
        (d, d.name) for d in sorted(stage_dir.iterdir()) if d.is_dir() and (d / "eval.json").is_file()]
    out = []
    for d, level in dirs:
        samples = d / "eval_samples.jsonl"
        out.append(EvalResult(d, level, read_json(d / "eval.json"), read_jsonl(samples) if samples.is_file() else []))
    return out


def load_run(path: str | Path) -> Run:
    """Read the run directory at ``path``: its config, every stage folder in order, the summary when written."""
    run_dir = Path(path)
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a run directory (a file)")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ReportError(f"{run_dir}: not a run directory (no config.yaml; reelrl train writes one)")
    try:
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ReportError(f"{cfg_path}: not YAML ({e})") from None
    found = sorted((int(m[1]), m[2], d) for d in run_dir.iterdir() if d.is_dir() and (m := STAGE_DIR.match(d.name)))
    if not found:
        raise ReportError(f"{run_dir}: no stage folders (<i>-sft, <i>-eval, <i>-rl, <i>-dpo) yet")
    stages, history = [], []
    for index, kind, d in found:
        if kind in STAGE_LABEL:
            history.append(STAGE_LABEL[kind])
        label = "+".join(history) or "base"
        st = Stage(index, kind, d, label, done=(d / "done.json").is_file())
        if (d / "metrics.jsonl").is_file():
            st.metrics = read_jsonl(d / "metrics.jsonl")
        if (d / "samples.jsonl").is_file():
            st.groups = read_jsonl(d / "samples.jsonl")
        if kind == "dpo" and (d / "pairs.jsonl").is_file():
            st.pairs = read_jsonl(d / "pairs.jsonl")
        if kind == "eval":
            st.evals = _evals(d)
        stages.append(st)
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
    return Run(run_dir, config, stages, summary)


def numeric_keys(records: list[dict[str, Any]]) -> list[str]:
    """Keys with a number in some record, in first-seen order (``step`` and the wall ``time`` left out)."""
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.setdefault(k)
    return list(keys)


def series(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """``(step, value)`` of every record holding a finite number under ``key``."""
    out = []
    for i, r in enumerate(records, 1):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            out.append((float(r.get("step", i)), float(v)))
    return out


def is_correct(accuracy: Any) -> bool | None:
    """A completion counts as correct when its ``accuracy`` is at least 0.5 (1 for exact answers; a temporal
    IoU of 0.5 or more for grounding); None when it was not scored."""
    if not isinstance(accuracy, (int, float)) or accuracy != accuracy:
        return None
    return float(accuracy) >= 0.5


def eval_columns(run: Run) -> list[tuple[str, dict[str, Any]]]:
    """``(column label, eval.json summary)`` of every evaluation, in stage order (a level's label names it)."""
    cols = []
    for st in run.evaluations():
        for ev in st.evals:
            cols.append((st.label if ev.level is None else f"{st.label} [{ev.level}]", ev.summary))
    return cols


def chance_row(run: Run) -> dict[str, Any] | None:
    """The summary's chance row (gym runs), or None."""
    rows = (run.summary or {}).get("rows") or []
    return next((r for r in rows if r.get("model") == "chance"), None)
