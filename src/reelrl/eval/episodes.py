"""Evaluation of multi-turn episodes (``rl.env``): one greedy trajectory per row, every turn scored.

With an environment in the recipe, the model is evaluated on the task it is
trained on: each row's episode runs greedily through the same
:class:`~reelrl.rollout.episodes.EpisodeRunner` as training, and each turn is
scored by :func:`reelrl.rewards.turns.score_turns` (the recipe's rewards over
the turn's columns). The summary has the keys of
:func:`reelrl.eval.runner.evaluate` -- ``accuracy`` is the mean over a
trajectory's scored turns, averaged over rows -- plus ``turns``: per turn
``k``, the rows that reached it (``n``), those whose turn k was scored
(``scored``; a streaming thought is not), the mean ``accuracy`` over those,
and the accuracy over all rows with 0 for rows without a scored turn k
(``accuracy_all``: for two-stage grounding, the box IoU a row earns end to
end); both are None for a turn no row had scored. Temporal-grounding first turns also get mIoU and R@IoU (``grounding``).
Environments that flag their answer turns ``after_question`` (streaming) add
``tokens_after_question``: the mean count of model tokens generated after
the question was asked (the response latency VST measures).
One record per row (every turn's text, columns and accuracy) goes to
``eval_samples.jsonl``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow
from reelrl.dist.parallel import ParallelDims
from reelrl.eval.runner import grounding_metrics, write_results
from reelrl.monitor.progress import progress_bar
from reelrl.rewards import RewardSpec
from reelrl.rewards.turns import score_turns
from reelrl.rollout.engine import GenerationRequest
from reelrl.rollout.episodes import EpisodeRunner
from reelrl.rollout.hf import SamplingParams

__all__ = ["evaluate_episodes"]

METRICS = [RewardSpec("accuracy", 0.0), RewardSpec("format", 0.0)]


@torch.no_grad()
def evaluate_episodes(runner: EpisodeRunner, encoder: PromptEncoder, rows: list[VideoRow],
                      reward_specs: list[RewardSpec], out_dir: Path | None = None, progress: bool = True,
                      title: str = "eval", batch_size: int = 32, dims: ParallelDims | None = None) -> dict:
    """Greedy episodes of every readable row (module docstring); the summary dict."""
    dims = dims if dims is not None else ParallelDims()
    vlm = runner.vlm
    vlm.model.eval()
    greedy = SamplingParams(**{**runner.sampling.__dict__, "temperature": 0.0})
    mine = dims.share(list(enumerate(rows)))
    local = []
    with progress_bar(title, len(mine), progress and dims.is_main) as bar:
        for s in range(0, len(mine), batch_size):
            items = []
            for i, row in mine[s : s + batch_size]:
                prompt = encoder.try_encode(row)
                bar.advance()
                if prompt is not None:
                    items.append((i, row, GenerationRequest(prompt, 1, None, vlm.encode_vision(prompt))))
            for (i, row, _), ep in zip(items, runner.generate([(row, r) for _, row, r in items], greedy)):
                after = sum(n for n, info in zip(ep.turn_lengths[0], ep.infos[0]) if info.get("after_question"))
                local.append((i, row.id, ep.turn_texts[0], ep.turn_columns[0], int(ep.rollout.lengths[0]),
                              after if any(info.get("after_question") for info in ep.infos[0]) else None))
    done = sorted(x for part in dims.gather(local) for x in part)
    if not done:
        raise RuntimeError(f"{title}: no readable rows ({int(dims.sum(len(encoder.skipped)))} skipped)")
    by_id = {r.id: r for r in rows}
    picked = [by_id[rid] for _, rid, *_ in done]
    scored = score_turns(reward_specs, METRICS, picked, [[x[2]] for x in done], [[x[3]] for x in done],
                         runner.max_turns)
    result, records = _summary(picked, done, scored, skipped=len(rows) - len(done))
    if out_dir is not None and dims.is_main:
        write_results(Path(out_dir), result, records)
    return result


def _summary(rows: list[VideoRow], done: list, scored: list, skipped: int) -> tuple[dict, list[dict]]:
    acc = [float(cols["accuracy"][0]) for _, cols in scored]
    fmt = [float(cols["format"][0]) for _, cols in scored]
    total = [float(r[0]) for r, _ in scored]
    n_turns = sum(1 for k in scored[0][1] if k.startswith("turn") and k.endswith("/accuracy"))
    turns = {}
    for k in range(n_turns):
        vals = [float(cols[f"turn{k + 1}/accuracy"][0]) for _, cols in scored]
        got = [v for v in vals if not math.isnan(v)]
        turns[f"turn{k + 1}"] = {"n": sum(len(x[2]) > k for x in done), "scored": len(got),
                                 "accuracy": sum(got) / len(got) if got else None,
                                 "accuracy_all": sum(got) / len(vals) if got else None}
    first = [float(cols["turn1/accuracy"][0]) for _, cols in scored]
    per_task: dict[str, list[int]] = {}
    for j, row in enumerate(rows):
        per_task.setdefault(row.task, []).append(j)
    ground = [f for f, row in zip(first, rows) if row.problem_type == "temporal_grounding"]
    result = {
        "n": len(rows), "skipped": skipped, "accuracy": sum(acc) / len(acc),
        "accuracy_benchmark": sum(acc) / len(acc), "format": sum(fmt) / len(fmt),
        "mean_reward": sum(total) / len(total), "mean_length": sum(x[4] for x in done) / len(done),
        "turns": turns,
        "per_task": {t: {"n": len(ix), "accuracy": sum(acc[j] for j in ix) / len(ix),
                         "accuracy_benchmark": sum(acc[j] for j in ix) / len(ix)} for t, ix in sorted(per_task.items())},
        **({"grounding": grounding_metrics(ground)} if ground else {}),
    }
    after = [x[5] for x in done if x[5] is not None]
    if after:  # environments that ask a question mid-episode (streaming): model tokens after it, the latency
        result["tokens_after_question"] = sum(after) / len(after)
    records = [{"id": row.id, "task": row.task, "answer": row.answer, "turns": texts,
                "turn_columns": [None if c is None else {k: v for k, v in c.items() if k in ("answer", "problem_type")}
                                 for c in cols_in],
                "accuracy": acc[j], "format": fmt[j], "reward": total[j],
                **{k: float(v[0]) for k, v in cols.items() if k.startswith("turn")}}
               for j, (row, (_, _, texts, cols_in, *_), (_, cols)) in enumerate(zip(rows, done, scored))]
    return result, records
