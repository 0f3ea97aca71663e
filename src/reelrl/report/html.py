"""HTML pieces of a report: the page shell, training-curve panels, the eval table of every stage side by side."""

from __future__ import annotations

import re
from html import escape
from typing import Any

from reelrl.report.assets import CSS, JS
from reelrl.report.data import Run, Stage, chance_row, eval_columns, numeric_keys, series
from reelrl.report.plots import line_chart, stacked_bars

#: the panels of the training curves: a title and the patterns of the metric keys drawn in it
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Reward", (r"reward/mean", r"reward/(?!accuracy/|format/)[^/]+/mean")),
    ("Accuracy (all, per task)", (r"reward/accuracy/mean", r"task/[^/]+/accuracy")),
    ("Format", (r"reward/format/mean",)),
    ("KL", (r"loss/kl",)),
    ("Entropy", (r"loss/entropy",)),
    ("Completion length (tokens)", (r"completion/length",)),
    ("Clip fraction", (r"loss/clip_frac(_low|_high)?",)),
    ("Loss", (r"loss/pg_loss", r"loss/loss", r"sft/loss", r"dpo/loss", r"loss")),
    ("Gradient norm", (r"grad_norm",)),
    ("Time per step by phase (s)", (r"time/.+",)),
)


def page(title: str, subtitle: str, nav: list[tuple[str, str]], body: str) -> str:
    """A whole self-contained HTML document: the stylesheet and script inline."""
    links = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body><header><h1>{escape(title)}</h1><div class="sub">{escape(subtitle)}</div><nav>{links}</nav>'
            f'</header><main>{body}</main><script>{JS}</script></body></html>\n')


def panel_keys(keys: list[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The panels that have keys among ``keys`` (each key in its first panel) and the keys in none."""
    left, panels = list(keys), []
    for title, patterns in PANELS:
        got = [k for p in patterns for k in left if re.fullmatch(p, k)]
        got = list(dict.fromkeys(got))
        if got:
            panels.append((title, got))
            left = [k for k in left if k not in got]
    return panels, left


def _short(key: str) -> str:
    m = re.fullmatch(r"task/([^/]+)/accuracy", key)
    return f"task {m[1]}" if m else key


def stage_curves(stage: Stage) -> str:
    """A training stage's curves: the standard panels, then every other numeric metric in a collapsed block."""
    if not stage.metrics:
        return f"<h3>{escape(stage.name)}</h3><p>No metrics.jsonl in {escape(str(stage.dir))}.</p>"
    panels, other = panel_keys(numeric_keys(stage.metrics))
    charts = [line_chart({_short(k): series(stage.metrics, k) for k in keys}, title) for title, keys in panels]
    rest = "".join(line_chart({k: series(stage.metrics, k)}, k, width=300, height=190) for k in other)
    status = "" if stage.done else " (not finished)"
    more = (f'<details><summary>{len(other)} more metrics</summary><div class="charts">{rest}</div></details>'
            if other else "")
    return (f'<h3>{escape(stage.name)}: {len(stage.metrics)} steps{status}</h3>'
            f'<div class="charts">{"".join(charts)}</div>{more}')


def time_split(run: Run) -> str:
    """Total wall time per phase (``time/*`` summed over steps) of each training stage, as stacked bars."""
    bars = {}
    for st in run.training():
        tot: dict[str, float] = {}
        for r in st.metrics:
            for k, v in r.items():
                if k.startswith("time/") and isinstance(v, (int, float)) and v == v:
                    tot[k[5:]] = tot.get(k[5:], 0.0) + float(v)
        bars[st.name] = tot
    return stacked_bars(bars, "Time per phase, whole stage", width=520)


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}" if v == v else "nan"
    return escape(str(v))


EVAL_ROWS = (("n", "rows"), ("accuracy", "accuracy"), ("accuracy_benchmark", "benchmark accuracy"),
             ("format", "format"), ("mean_reward", "mean reward"), ("mean_length", "mean length (tokens)"))


def eval_table(run: Run) -> str:
    """Every evaluation of the run side by side (a column each, chance first), overall and per task, with the
    change from the first to the last evaluation."""
    cols = eval_columns(run)
    if not cols:
        return "<p>No evaluation in this run yet.</p>"
    chance = chance_row(run)
    tasks = list(dict.fromkeys(t for _, s in cols for t in s.get("per_task", {})))
    rows: list[tuple[str, list[Any], Any]] = []
    for key, label in EVAL_ROWS:
        rows.append((label, [s.get(key) for _, s in cols], chance.get(key) if chance and key == "accuracy" else None))
    for t in tasks:
        rows.append((f"{t}: accuracy", [s.get("per_task", {}).get(t, {}).get("accuracy") for _, s in cols],
                     (chance or {}).get("per_task", {}).get(t)))
        mae = [s.get("per_task", {}).get(t, {}).get("progress", {}).get("mae") for _, s in cols]
        if any(v is not None for v in mae):
            rows.append((f"{t}: progress MAE", mae, None))
        miou = [s.get("per_task", {}).get(t, {}).get("grounding", {}).get("mIoU") for _, s in cols]
        if any(v is not None for v in miou):
            rows.append((f"{t}: mIoU", miou, None))
    head = ("<tr><th>metric</th>" + ("<th>chance</th>" if chance else "")
            + "".join(f"<th>{escape(c)}</th>" for c, _ in cols) + ("<th>last - first</th>" if len(cols) > 1 else "")
            + "</tr>")
    body = []
    for label, vals, ch in rows:
        cells = [f"<td>{escape(label)}</td>"] + ([f"<td>{_num(ch)}</td>"] if chance else [])
        cells += [f"<td>{_num(v)}</td>" for v in vals]
        if len(cols) > 1:
            a, b = vals[0], vals[-1]
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and label != "rows":
                d = b - a
                cls = "up" if d > 0 else "down" if d < 0 else ""
                cells.append(f'<td class="{cls}">{d:+.3f}</td>')
            else:
                cells.append("<td>-</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="metrics eval"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
