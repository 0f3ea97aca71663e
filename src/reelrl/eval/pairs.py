"""Paired consistency: the share of counterexample groups in which every member is answered right.

Rows of grouped gym families (``meta["group"] = {"id", "member", "size"}``,
e.g. :mod:`reelrl.gym.physics`' pairs: the same scene with and without a
physics violation) are grouped by id. A group is complete when all its
``size`` members were scored; it is consistent when every member's strict
accuracy is 1 (for free-form rows, scored by ROUGE, that means an exact
answer). A model that answers every video "it obeys physics" gets half of
the rows right and no pair; paired consistency tells the two apart, as
VideoHallu's counterexample pairs are meant to.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from reelrl.data.schema import VideoRow


def paired_consistency(rows: list[VideoRow], accuracy: list[float]) -> dict[str, dict[str, float]]:
    """Per task with groups: ``{"pairs": complete groups, "consistency": share with every member right}``."""
    groups: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    sizes: dict[tuple[str, str], int] = {}
    for row, acc in zip(rows, accuracy, strict=True):
        group: Any = (row.meta or {}).get("group")
        if not isinstance(group, dict) or "id" not in group:
            continue
        groups[row.task][group["id"]].append((int(group.get("member", 0)), float(acc)))
        sizes[(row.task, group["id"])] = int(group.get("size", 2))
    out: dict[str, dict[str, float]] = {}
    for task, by_id in sorted(groups.items()):
        complete = [m for gid, m in by_id.items() if len({k for k, _ in m}) == sizes[(task, gid)]]
        if complete:
            right = sum(all(a >= 1.0 for _, a in m) for m in complete)
            out[task] = {"pairs": len(complete), "consistency": right / len(complete)}
    return out


def add_paired(result: dict[str, Any], rows: list[VideoRow], accuracy: list[float]) -> dict[str, Any]:
    """Put :func:`paired_consistency` into ``result["per_task"][task]["paired"]`` (tasks with groups only)."""
    for task, stats in paired_consistency(rows, accuracy).items():
        if task in result.get("per_task", {}):
            result["per_task"][task]["paired"] = stats
    return result
