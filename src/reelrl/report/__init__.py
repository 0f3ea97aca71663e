"""``reelrl report``: one self-contained HTML file per run, or one comparing runs.

A run's page (:func:`write_report`) holds its training curves (every numeric key of each training stage's
``metrics.jsonl``: reward, accuracy per task, format, KL, entropy, completion length, clip fraction, time per
phase, ...), the eval table of every evaluation side by side, and a rollout browser of the sampled training
groups (``samples.jsonl``, every ``rl.log_samples_every`` steps), a DPO stage's preference pairs
(``pairs.jsonl``: chosen and rejected, why, their reference log-probs) and eval samples (``eval_samples.jsonl``) with
the frames the model saw, every completion's reward and advantage, filterable by source, task and correctness.
A comparison (:func:`write_comparison`) tables the final evaluation of each run and overlays their curves.

The file needs nothing at view time: charts are inline SVG (:mod:`reelrl.report.plots`), frames are JPEG
``data:`` URIs (:mod:`reelrl.report.frames`), the stylesheet and the filter script are inline.

Modules: ``data`` (reading a run directory), ``plots`` (SVG), ``frames`` (frame strips), ``html`` (page,
curves, eval table), ``browser`` (rollout browser), ``compare`` (several runs).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from reelrl.report.browser import browser, collect_cards
from reelrl.report.compare import render_comparison
from reelrl.report.data import ReportError, Run, load_run
from reelrl.report.frames import FrameStrips
from reelrl.report.html import eval_table, page, stage_curves, time_split

__all__ = ["ReportError", "load_run", "render_run", "write_comparison", "write_report"]


def render_run(run: Run, *, max_groups: int = 40, max_eval: int = 40, strips: FrameStrips | None = None) -> str:
    """The whole HTML page of one run (see the module docstring)."""
    strips = strips if strips is not None else FrameStrips(search=(run.dir, Path(run.dir).parent))
    stages = ", ".join(f"{s.name}{'' if s.done else ' (not finished)'}" for s in run.stages)
    curves = "".join(stage_curves(s) for s in run.training()) or "<p>No training stage in this run.</p>"
    cards, sources = collect_cards(run, strips, max_groups, max_eval)
    desc = run.config.get("description") or ""
    cfg = (run.dir / "config.yaml").read_text(encoding="utf-8")
    body = (f'<section id="overview"><h2>Run</h2><p>{escape(str(run.dir))}: {escape(desc)}</p>'
            f'<p>Stages: {escape(stages)}</p><details><summary>config.yaml</summary><pre>{escape(cfg)}</pre>'
            f'</details></section>'
            f'<section id="eval"><h2>Evaluations</h2>{eval_table(run)}</section>'
            f'<section id="curves"><h2>Training curves</h2>{curves}<h3>Time split</h3>'
            f'<div class="charts">{time_split(run)}</div></section>'
            f'<section id="rollouts"><h2>Rollouts</h2>{browser(cards, sources)}</section>')
    nav = [("overview", "run"), ("eval", "evaluations"), ("curves", "training curves"), ("rollouts", "rollouts")]
    return page(f"reelrl report: {run.title}", str(run.dir), nav, body)


def _write(html: str, out: Path) -> Path:
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{out}: cannot write the report ({e.strerror})") from None
    return out


def write_report(run_dir: str | Path, out: str | Path | None = None, *, max_groups: int = 40,
                 max_eval: int = 40) -> Path:
    """Write the page of the run at ``run_dir`` to ``out`` (default ``<run_dir>/report.html``); returns the path."""
    run = load_run(run_dir)
    return _write(render_run(run, max_groups=max_groups, max_eval=max_eval),
                  Path(out) if out is not None else run.dir / "report.html")


def write_comparison(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write the comparison page of the runs at ``run_dirs`` to ``out``; returns the path."""
    return _write(render_comparison([load_run(d) for d in run_dirs]), Path(out))
