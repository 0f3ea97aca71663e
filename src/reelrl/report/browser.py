"""The rollout browser: sampled training groups, DPO preference pairs and eval samples, with the frames the model
saw, filterable.

Every prompt is a ``div.sample`` (``data-source``: its stage folder, ``data-task``) holding one
``tr.completion`` per completion (``data-correct``: ``1``, ``0``, or ``na`` when unscored; see
:func:`reelrl.report.data.is_correct`). The page's script (:mod:`reelrl.report.assets`) hides the cards and
rows the filters rule out and counts what is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from reelrl.report.data import Run, is_correct
from reelrl.report.frames import FrameStrips, Strip


@dataclass
class Card:
    """One prompt of the browser: where it comes from, its row, and its completions."""

    source: str  # filter value: the stage folder (and level)
    head: str  # HTML of its header line
    record: dict[str, Any]
    completions: list[dict[str, Any]]  # text, reward, advantage, accuracy, format
    strip: Strip | str


def spread(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced, the first and the last kept."""
    if len(items) <= n:
        return list(items)
    if n <= 1:
        return items[-1:]
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _col(rec: dict, name: str, i: int) -> Any:
    col = rec.get("columns", {}).get(name)
    return col[i] if isinstance(col, list) and i < len(col) else None


def collect_cards(run: Run, strips: FrameStrips, max_groups: int, max_eval: int) -> tuple[list[Card], list[tuple[str, str]]]:
    """The browser's cards (at most ``max_groups`` groups per training stage, spread over the logged steps, and
    the first ``max_eval`` samples of each evaluation) and the ``(value, label)`` of each source."""
    cards, sources = [], []
    for st in run.training():
        if not st.groups:
            continue
        sampling = strips.sampling(st.dir)
        sources.append((st.name, f"training groups ({st.name})"))
        for rec in spread(st.groups, max_groups):
            texts = rec.get("completions", [])
            rewards, advs = rec.get("rewards", []), rec.get("advantages", [])
            comps = [{"text": t, "reward": rewards[i] if i < len(rewards) else None,
                      "advantage": advs[i] if i < len(advs) else None,
                      "accuracy": _col(rec, "accuracy", i), "format": _col(rec, "format", i)}
                     for i, t in enumerate(texts)]
            variant = f" · view <b>{escape(rec['variant'])}</b>" if rec.get("variant") else ""
            head = (f"<b>{escape(st.name)}</b> step {_n(rec.get('step'))} · row <b>{escape(str(rec.get('row')))}</b>"
                    f" · task <b>{escape(str(rec.get('task')))}</b>{variant}")
            cards.append(Card(st.name, head, rec, comps, strips.strip(rec.get("video"), sampling)))
    for st in run.training():
        if st.pairs:
            sources.append((st.name, f"preference pairs ({st.name})"))
            sampling = strips.sampling(st.dir)
            cards += [_pair_card(st.name, rec, strips.strip(rec.get("video"), sampling))
                      for rec in spread(st.pairs, max_groups)]
    for st in run.evaluations():
        for ev in st.evals:
            source = st.name if ev.level is None else f"{st.name}/{ev.level}"
            label = f"eval of {st.label}" + (f", level {ev.level}" if ev.level else "") + f" ({source})"
            sources.append((source, label))
            sampling = strips.sampling(ev.dir)
            for rec in ev.samples[:max_eval]:
                comps = [{"text": rec.get("completion", ""), "reward": rec.get("reward"), "advantage": None,
                          "accuracy": rec.get("accuracy"), "format": rec.get("format")}]
                head = (f"<b>{escape(source)}</b> eval of {escape(st.label)} · row <b>{escape(str(rec.get('id')))}</b>"
                        f" · task <b>{escape(str(rec.get('task')))}</b>")
                cards.append(Card(source, head, rec, comps, strips.strip(rec.get("video"), sampling)))
    return cards, sources


def _pair_card(source: str, rec: dict[str, Any], strip: Strip | str) -> Card:
    """A DPO stage's preference pair (``pairs.jsonl``): the chosen, then the rejected completion."""
    acc = rec.get("accuracy") if isinstance(rec.get("accuracy"), list) else [None, None]
    ref = rec.get("ref_logp") if isinstance(rec.get("ref_logp"), list) else [None, None]
    comps = [{"label": label, "text": rec.get(f"{label}_text", ""), "reward": None, "advantage": None,
              "accuracy": acc[i] if i < len(acc) else None, "format": None,
              "ref_logp": ref[i] if i < len(ref) else None} for i, label in enumerate(("chosen", "rejected"))]
    head = (f"<b>{escape(source)}</b> preference pair · row <b>{escape(str(rec.get('row_id')))}</b> · task "
            f"<b>{escape(str(rec.get('task')))}</b> · rejected for <b>{escape(str(rec.get('reason')))}</b>")
    return Card(source, head, rec, comps, strip)


def _n(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return escape(str(v))


def _correct_attr(acc: Any) -> str:
    c = is_correct(acc)
    return "na" if c is None else "1" if c else "0"


def render_card(card: Card) -> str:
    rec = card.record
    if isinstance(card.strip, Strip):
        frames = (f'<img class="frames" src="{card.strip.uri}" alt="sampled frames">'
                  f'<div class="caption">{escape(card.strip.caption)}</div>')
    else:
        frames = f'<div class="noframes">{escape(card.strip)}</div>'
    question = rec.get("question")
    q = f"<pre>{escape(question)}</pre>" if question else "<pre>(question not recorded)</pre>"
    pair = any("ref_logp" in c for c in card.completions)  # a preference pair: reference log-probs, no rewards
    cols = ("ref_logp", "accuracy") if pair else ("reward", "advantage", "accuracy", "format")
    rows = []
    for i, c in enumerate(card.completions):
        mark = {"1": "✓", "0": "✗", "na": "·"}[_correct_attr(c["accuracy"])]
        nums = "".join(f'<td class="num">{_n(c.get(k))}</td>' for k in cols)
        rows.append(f'<tr class="completion" data-correct="{_correct_attr(c["accuracy"])}"><td class="mark">{mark}'
                    f'</td><td class="num">{escape(str(c.get("label", i)))}</td><td class="text">'
                    f'{escape(c["text"])}</td>{nums}</tr>')
    heads = "".join(f"<th>{'reference log-prob' if k == 'ref_logp' else k}</th>" for k in cols)
    table = ('<table class="completions"><thead><tr><th></th><th>#</th><th>completion</th>'
             f'{heads}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return (f'<div class="sample" data-source="{escape(card.source)}" data-task="{escape(str(rec.get("task")))}">'
            f'<div class="head">{card.head}</div>{frames}{q}<div class="head">gold answer: '
            f'<b>{escape(str(rec.get("answer")))}</b></div>{table}</div>')


def _select(id_: str, label: str, options: list[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{escape(v)}">{escape(t)}</option>' for v, t in [("all", "all"), *options])
    return f'<label>{escape(label)} <select id="{id_}">{opts}</select></label>'


def browser(cards: list[Card], sources: list[tuple[str, str]]) -> str:
    """The filter bar and every card."""
    if not cards:
        return ("<p>No sampled groups or eval samples in this run yet (training groups are logged every "
                "rl.log_samples_every steps to samples.jsonl).</p>")
    tasks = sorted({str(c.record.get("task")) for c in cards})
    bar = ('<div class="filters">' + _select("f-source", "source", sources)
           + _select("f-task", "task", [(t, t) for t in tasks])
           + _select("f-correct", "completions", [("1", "correct"), ("0", "incorrect"), ("na", "unscored")])
           + '<span id="f-count"></span></div>')
    return bar + "".join(render_card(c) for c in cards)
