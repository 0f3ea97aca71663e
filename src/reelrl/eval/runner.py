"""Greedy evaluation: accuracy per task family and overall, JSON + per-sample JSONL + a table."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from reelrl.data.answers import extract_choice, extract_tag, final_claim, normalised_answer
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow
from reelrl.dist.parallel import ParallelDims
from reelrl.eval.critic import add_critic
from reelrl.eval.pairs import add_paired
from reelrl.models.vlm import VLM
from reelrl.monitor.progress import progress_bar
from reelrl.rewards import RewardSpec, compute_rewards
from reelrl.rewards.stvg import id_grounding_metrics
from reelrl.rollout.engine import GenerationRequest, KVCacheEngine, RolloutEngine
from reelrl.rollout.hf import SamplingParams
from reelrl.video.transforms import FrameTransform


@torch.no_grad()
def evaluate(
    vlm: VLM,
    tokenizer,
    encoder: PromptEncoder,
    rows: list[VideoRow],
    sampling: SamplingParams,
    reward_specs: list[RewardSpec],
    out_dir: Path | None = None,
    progress: bool = True,
    title: str = "eval",
    batch_size: int = 32,
    dims: ParallelDims | None = None,
    engine: RolloutEngine | None = None,
) -> dict:
    """Greedy-decode every row, ``batch_size`` rows per decode batch.

    Scored with ``accuracy`` (strict), ``accuracy_benchmark`` (official
    benchmark answer extraction), ``format`` and the recipe's rewards; see
    :func:`score_samples` for the keys of the returned summary. Under data
    parallelism each rank decodes every dp-th row; the samples are gathered
    in row order, every rank returns the same summary and rank 0 writes the files.
    ``engine`` generates (default: :class:`~reelrl.rollout.engine.KVCacheEngine` on ``vlm``).
    """
    dims = dims if dims is not None else ParallelDims()
    samples = decode_rows(vlm, tokenizer, encoder, rows, sampling, progress=progress, title=title,
                          batch_size=batch_size, dims=dims, engine=engine)
    if not samples:
        raise RuntimeError(f"{title}: no readable rows ({int(dims.sum(len(encoder.skipped)))} skipped)")
    result, records = score_samples(samples, reward_specs, skipped=len(rows) - len(samples))
    if out_dir is not None and dims.is_main:
        write_results(Path(out_dir), result, records)
    return result


def write_results(out_dir: Path, result: dict, records: list[dict]) -> None:
    """``out_dir/eval.json`` (the summary) and ``out_dir/eval_samples.jsonl`` (one record per sample)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2))
    with (out_dir / "eval_samples.jsonl").open("w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


@torch.no_grad()
def decode_rows(
    vlm: VLM,
    tokenizer,
    encoder: PromptEncoder,
    rows: list[VideoRow],
    sampling: SamplingParams,
    *,
    views: list[tuple[FrameTransform, str] | None] | None = None,
    progress: bool = True,
    title: str = "eval",
    batch_size: int = 32,
    dims: ParallelDims | None = None,
    engine: RolloutEngine | None = None,
) -> list[tuple[VideoRow, str, int]]:
    """Greedy completions ``(row, text, length)`` of every readable row, in row order, on every rank.

    ``views[i]``: a ``(transform, variant name)`` applied to row ``i``'s frames (None: as decoded). Under data
    parallelism each rank decodes every dp-th row and the results are gathered. Unreadable rows are left out
    (the encoder counts them in ``skipped``).
    """
    dims = dims if dims is not None else ParallelDims()
    engine = engine if engine is not None else KVCacheEngine(vlm)
    vlm.model.eval()
    greedy = SamplingParams(**{**sampling.__dict__, "temperature": 0.0})
    mine = dims.share(list(enumerate(rows)))
    local: list[tuple[int, VideoRow, str, int]] = []
    with progress_bar(title, len(mine), progress and dims.is_main) as bar:
        for s in range(0, len(mine), batch_size):
            batch, requests = [], []
            for i, row in mine[s : s + batch_size]:
                view = views[i] if views is not None else None
                prompt = (encoder.try_encode(row) if view is None
                          else encoder.try_encode(row, transform=view[0], variant=view[1]))
                bar.advance()
                if prompt is not None:
                    batch.append((i, row))
                    requests.append(GenerationRequest(prompt, 1, None, vlm.encode_vision(prompt)))
            for (i, row), ro in zip(batch, engine.generate(requests, greedy)):
                text = tokenizer.decode(ro.tokens[0, : int(ro.lengths[0])], skip_special_tokens=True)
                local.append((i, row, text, int(ro.lengths[0])))
    return [(row, text, n) for _, row, text, n in sorted(x for part in dims.gather(local) for x in part)]


def score_samples(
    samples: list[tuple[VideoRow, str, int]], reward_specs: list[RewardSpec], skipped: int = 0
) -> tuple[dict, list[dict]]:
    """Score decoded completions ``(row, text, length)``: the summary of :func:`evaluate` and one record per sample.

    Summary keys: ``n``, ``skipped`` (rows that could not be encoded, as
    given), ``accuracy`` (strict: the ``accuracy`` reward, which needs an
    ``<answer>`` tag), ``accuracy_benchmark`` (:func:`benchmark_accuracy`),
    ``format``, ``mean_reward`` (the recipe's weighted rewards),
    ``mean_length``, the rates of :func:`reasoning_checks`, and ``per_task``
    with each task's ``n``, ``accuracy``, ``accuracy_benchmark`` and rates (and ``paired``,
    :func:`reelrl.eval.pairs.paired_consistency`, for families of counterexample pairs; ``grounding``
    for grounding tasks: mIoU and R@m, and for object-ID grounding also ``id_accuracy``, ``m_vIoU`` and
    ``vIoU@m``, :func:`reelrl.rewards.stvg.id_grounding_metrics`; ``progress`` for tasks of progress rows:
    the MAE, and ``failure_detection`` for failure-detection rows: the accuracy, :mod:`reelrl.eval.critic`).
    """
    texts = [t for _, t, _ in samples]
    dumped = [r.model_dump() for r, _, _ in samples]
    cols = {k: [d.get(k) for d in dumped] for k in dict.fromkeys(k for d in dumped for k in d)}
    total, per = compute_rewards(reward_specs, texts, cols)  # [N]
    _, metric_cols = compute_rewards([RewardSpec("accuracy", 0.0), RewardSpec("format", 0.0)], texts, cols)
    acc, fmt = metric_cols["accuracy"], metric_cols["format"]  # [N]
    bench = [benchmark_accuracy(text, row, a) for (row, text, _), a in zip(samples, acc.tolist())]
    checks = [reasoning_checks(text, row) for row, text, _ in samples]
    by_task: dict[str, list[tuple[float, float, dict]]] = defaultdict(list)
    for (row, _, _), a, b, c in zip(samples, acc.tolist(), bench, checks):
        by_task[row.task].append((a, b, c))
    grounding = {k: grounding_metrics([a for a, _, _ in v]) for k, v in by_task.items()
                 if _is_grounding(samples, k)}
    for k, (tious, id_metrics) in id_grounding_metrics([r for r, _, _ in samples], texts).items():
        grounding[k] = {**grounding_metrics(tious), **id_metrics}  # object-ID grounding: accuracy is the vIoU
    ious = [a for (row, _, _), a in zip(samples, acc.tolist()) if row.problem_type == "temporal_grounding"]
    result = {
        "n": len(samples),
        "skipped": skipped,
        "accuracy": float(acc.mean()),
        "accuracy_benchmark": sum(bench) / len(bench),
        "format": float(fmt.mean()),
        "mean_reward": float(total.mean()),
        "mean_length": sum(n for _, _, n in samples) / len(samples),
        **_check_rates(checks),
        "per_task": {k: {"n": len(v), "accuracy": sum(a for a, _, _ in v) / len(v),
                         "accuracy_benchmark": sum(b for _, b, _ in v) / len(v),
                         **_check_rates([c for _, _, c in v]),
                         **({"grounding": grounding[k]} if k in grounding else {})}
                     for k, v in sorted(by_task.items())},
        **({"grounding": grounding_metrics(ious)} if ious else {}),
    }
    add_paired(result, [row for row, _, _ in samples], acc.tolist())  # per_task[k]["paired"] for grouped families
    add_critic(result, [row for row, _, _ in samples], texts, acc.tolist())  # progress MAE, failure detection
    records = [{
        "id": row.id, "task": row.task, "video": row.video, "question": row.prompt_text(), "answer": row.answer,
        "completion": text, "length": n,
        "accuracy": float(acc[i]), "accuracy_benchmark": bench[i], "format": float(fmt[i]),
        "reward": float(total[i]), **checks[i],
        **{f"reward/{k}": float(v[i]) for k, v in per.items()},
    } for i, (row, text, n) in enumerate(samples)]
    return result, records


IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
"""The R@IoU thresholds temporal-grounding benchmarks report (Charades-STA, ActivityNet Captions)."""


def grounding_metrics(ious: list[float]) -> dict[str, float]:
    """``mIoU`` (mean temporal IoU) and ``R@m``: the fraction of rows with IoU >= m, m in :data:`IOU_THRESHOLDS`.

    As Charades-STA / ActivityNet-Captions evaluations report them (one prediction per query, "R1@m"); a
    completion without a parsable span has IoU 0.
    """
    n = max(1, len(ious))
    return {"n": len(ious), "mIoU": sum(ious) / n, **{f"R@{m:g}": sum(i >= m for i in ious) / n
                                                       for m in IOU_THRESHOLDS}}


def _is_grounding(samples: list[tuple[VideoRow, str, int]], task: str) -> bool:
    return any(row.task == task and row.problem_type == "temporal_grounding" for row, _, _ in samples)


def benchmark_accuracy(text: str, row: VideoRow, strict: float) -> float:
    """Accuracy of one completion as an official benchmark script would score it.

    ``multiple_choice`` rows: 1.0 when :func:`reelrl.data.answers.extract_choice`
    in ``"benchmark"`` mode (Video-MME's official ``extract_characters_regex``
    on the ``<answer>`` tag's content, or on the whole output when it has no
    tag) gives the gold letter, else 0.0. A model that answers "The best answer
    is B" without tags scores 0 in ``accuracy`` and 1 here; one that answers
    ``<answer>A ball</answer>`` for gold "A" scores 0 there and 1 here.

    Other problem types: ``strict`` (the ``accuracy`` reward) unchanged. Their
    official fallbacks would rarely change a score: VSI-Bench parses the first
    word of the output (``fuzzy_matching``) and Video-R1's ``eval_bench.py``
    the whole output as one float, so an untagged reasoning trace parses only
    when it is nothing but the number; multi-select rows have no standard
    benchmark rule.
    """
    if row.problem_type != "multiple_choice" or not row.options:
        return strict
    return float(extract_choice(text, len(row.options), "benchmark") == row.answer.strip().upper())


def reasoning_checks(text: str, row: VideoRow) -> dict:
    """What the reasoning claims versus what the completion answers (choice and numeric rows).

    ``claim``: the last option or number the ``<think>`` text names
    (:func:`reelrl.data.answers.final_claim`); ``consistent``: the answer
    equals that claim; ``claim_correct``: the claim equals the gold answer.
    Both are None when the reasoning claims nothing checkable. A model whose
    claims are right but whose answers are not has learned to see, not to answer.
    """
    claim = final_claim(extract_tag(text, "think") or "", row)
    if claim is None:
        return {"claim": None, "consistent": None, "claim_correct": None}
    gold = normalised_answer(row.answer, row)
    return {"claim": claim, "consistent": claim == normalised_answer(extract_tag(text), row),
            "claim_correct": claim == gold}


def _check_rates(checks: list[dict]) -> dict[str, float | None]:
    """Mean ``consistent`` and ``claim_correct`` over the samples whose reasoning makes a claim."""
    out: dict[str, float | None] = {}
    for key in ("consistent", "claim_correct"):
        vals = [c[key] for c in checks if c[key] is not None]
        out[key] = sum(vals) / len(vals) if vals else None
    return out


def print_eval(result: dict, title: str = "evaluation", chance: dict[str, float] | None = None) -> None:
    """Per-task table of a :func:`evaluate` summary: strict and benchmark accuracy, chance, reasoning checks."""
    table = Table(title=title)
    table.add_column("task")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("benchmark acc.", justify="right")
    if chance:
        table.add_column("chance", justify="right")
    table.add_column("claim correct", justify="right")
    table.add_column("answer = claim", justify="right")

    def num(v: dict, key: str) -> str:
        return "-" if v.get(key) is None else f"{v[key]:.3f}"

    def rates(v: dict) -> list[str]:
        return [num(v, k) for k in ("claim_correct", "consistent")]

    for task, v in result["per_task"].items():
        extra = [f"{chance.get(task, float('nan')):.3f}"] if chance else []
        table.add_row(task, str(v["n"]), f"{v['accuracy']:.3f}", num(v, "accuracy_benchmark"), *extra, *rates(v))
    extra = [f"{sum(chance.values()) / len(chance):.3f}"] if chance else []
    table.add_row("[bold]all", str(result["n"]), f"[bold]{result['accuracy']:.3f}",
                  num(result, "accuracy_benchmark"), *extra, *rates(result))
    Console().print(table)
    Console().print(f"format {result['format']:.3f}  mean reward {result['mean_reward']:.3f}  "
                    f"mean length {result['mean_length']:.1f}  skipped {result['skipped']}")
    for name, v in result.get("turns", {}).items():  # multi-turn episodes (reelrl.eval.episodes)
        if v["accuracy"] is None:
            Console().print(f"{name}: reached by {v['n']} rows, not scored")
            continue
        Console().print(f"{name}: accuracy {v['accuracy']:.3f} over the {v['scored']} scored of the {v['n']} rows "
                        f"that reached it, {v['accuracy_all']:.3f} over all rows")
    if "tokens_after_question" in result:
        Console().print(f"tokens generated after the question: {result['tokens_after_question']:.1f}")
    if "grounding" in result and "turns" in result:
        g = result["grounding"]
        Console().print(f"first turn: mIoU {g['mIoU']:.3f}  " + "  ".join(
            f"R@{m:g} {g[f'R@{m:g}']:.3f}" for m in IOU_THRESHOLDS))
    for task, v in result["per_task"].items():
        if "grounding" in v:
            g = v["grounding"]
            ids = (f"  ID accuracy {g['id_accuracy']:.3f}  m_vIoU {g['m_vIoU']:.3f}  (accuracy above is the m_vIoU)"
                   if "id_accuracy" in g else "  (accuracy above is the mIoU)")
            Console().print(f"{task}: mIoU {g['mIoU']:.3f}  " + "  ".join(
                f"R@{m:g} {g[f'R@{m:g}']:.3f}" for m in IOU_THRESHOLDS) + ids)
        if "progress" in v:
            p = v["progress"]
            parsed = "-" if p["mae_parsed"] is None else f"{p['mae_parsed']:.3f}"
            Console().print(f"{task}: progress MAE {p['mae']:.3f} (unparsed = the whole range), {parsed} over the "
                            f"{p['parsed']:.0%} parsed answers")
        if "failure_detection" in v:
            Console().print(f"{task}: failure-detection accuracy {v['failure_detection']['accuracy']:.3f}")
        if "paired" in v:
            Console().print(f"{task}: paired consistency {v['paired']['consistency']:.3f} over "
                            f"{v['paired']['pairs']} pairs (every member of a counterexample pair right)")
