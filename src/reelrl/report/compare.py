"""Several runs on one page: the final evaluation of each run in one table, training curves overlaid."""

from __future__ import annotations

import os
import re
from html import escape

from reelrl.report.data import Run, eval_columns, series
from reelrl.report.html import PANELS, _num, page
from reelrl.report.plots import line_chart

#: the overlaid panels (a subset of :data:`reelrl.report.html.PANELS`: one line per run each)
COMPARED = ("reward/mean", "reward/accuracy/mean", "reward/format/mean", "loss/kl", "loss/entropy",
            "completion/length", "loss/clip_frac")


def run_labels(runs: list[Run]) -> list[str]:
    """Each run's path relative to the runs' common folder (``grpo/seed0``), or its folder name alone."""
    paths = [os.path.abspath(r.dir) for r in runs]
    if len(paths) > 1:
        common = os.path.commonpath(paths)
        labels = [os.path.relpath(p, common) for p in paths]
        if len(set(labels)) == len(labels) and "." not in labels:
            return labels
    return [r.dir.name for r in runs]


def final_eval(run: Run) -> tuple[str, dict] | None:
    """The label and summary of the run's last evaluation (its last level with eval.levels), or None."""
    cols = eval_columns(run)
    return cols[-1] if cols else None


def last_training(run: Run):
    """The run's last training stage with metrics (its RL stage in a recipe ending ``rl, eval``), or None."""
    stages = [s for s in run.training() if s.metrics]
    rl = [s for s in stages if s.kind == "rl"]
    return (rl or stages or [None])[-1]


def comparison_table(runs: list[Run], labels: list[str]) -> str:
    finals = [final_eval(r) for r in runs]
    tasks = list(dict.fromkeys(t for f in finals if f for t in f[1].get("per_task", {})))
    cols = ["run", "recipe", "model evaluated", "rows", "accuracy", *[f"{t}" for t in tasks], "format",
            "mean reward", "mean length", "first eval accuracy"]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = []
    for run, label, fin in zip(runs, labels, finals):
        first = eval_columns(run)[0][1] if fin else None
        if fin is None:
            cells = [label, run.config.get("name", "?"), "(no evaluation)"] + ["-"] * (len(cols) - 3)
            body.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
            continue
        s = fin[1]
        vals = [s.get("n"), s.get("accuracy"), *[s.get("per_task", {}).get(t, {}).get("accuracy") for t in tasks],
                s.get("format"), s.get("mean_reward"), s.get("mean_length"), first.get("accuracy")]
        body.append(f"<tr><td>{escape(label)}</td><td>{escape(str(run.config.get('name', '?')))}</td>"
                    f"<td>{escape(fin[0])}</td>" + "".join(f"<td>{_num(v)}</td>" for v in vals) + "</tr>")
    return f'<table class="metrics compare"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def overlaid_charts(runs: list[Run], labels: list[str]) -> str:
    """One chart per compared metric that some run logged, a line per run (its last training stage)."""
    stages = [last_training(r) for r in runs]
    titles = {k: t for t, pats in PANELS for k in COMPARED if any(re.fullmatch(p, k) for p in pats)}
    charts = []
    for key in COMPARED:
        lines = {lab: series(st.metrics, key) for lab, st in zip(labels, stages) if st is not None}
        if any(lines.values()):
            charts.append(line_chart(lines, f"{titles.get(key, key)}: {key}", width=460, height=260))
    return f'<div class="charts">{"".join(charts)}</div>' if charts else "<p>No training metrics to overlay.</p>"


def render_comparison(runs: list[Run]) -> str:
    labels = run_labels(runs)
    body = (f'<section id="final"><h2>Final evaluation of each run</h2>{comparison_table(runs, labels)}</section>'
            f'<section id="curves"><h2>Training curves, overlaid</h2>{overlaid_charts(runs, labels)}</section>')
    title = f"reelrl comparison of {len(runs)} runs"
    sub = "; ".join(f"{lab}: {r.dir}" for lab, r in zip(labels, runs))
    return page(title, sub, [("final", "final evaluation"), ("curves", "curves")], body)

