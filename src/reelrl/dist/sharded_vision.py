"""MR-SP stage 1: encode the frames of long videos sharded across ranks, then all-gather.

LongVILA-R1 (Chen et al., 2025, "Scaling RL to Long Videos", MR-SP) encodes each
video once with its frames split across the sequence-parallel ranks and
all-gathers the embeddings, which are then cached and reused by every rollout
and log-prob pass.

Why splitting the time axis is exact for Qwen2-VL / Qwen2.5-VL vision towers
(checked against transformers 5.23 ``modeling_qwen2_5_vl.py`` and ``vision_utils.py``):
the patch rows of a video are laid out temporal-group-major, each temporal group
(``temporal_patch_size`` frames) being ``h * w`` consecutive rows; full-attention
blocks use ``cu_seqlens = repeat_interleave(h * w, t)``, i.e. one segment per
temporal group; window-attention blocks build their windows per temporal group
(``index.reshape(grid_t, llm_h, llm_w)`` then windows over h, w only); the 2D
rotary positions are (h, w) repeated ``t`` times; the patch merger merges 2x2
spatial blocks within a group. No computation crosses temporal groups, so
encoding groups ``[a, b)`` with grid ``(b - a, h, w)`` yields exactly rows
``[a*hw/m^2, b*hw/m^2)`` of the full output. (A tower whose attention spans the
whole clip, e.g. kimi_k25's ``merge_temporal=True``, would NOT be exact.)

Sharding plan: the temporal groups of all videos, taken in order (video-major,
then time), are split into ``P`` contiguous runs of near-equal patch count.
A single long video is thus split along time; several short videos may go to
different ranks whole. Because each rank's run is contiguous, its pixel rows
and its output tokens are contiguous too, and the rank-ordered all-gather is
already in the original order. Ranks with an empty run still take part in the
collectives (they contribute zero rows).

Gradients: see :mod:`reelrl.dist.env` -- the gather's backward sums the gradient
over ranks and slices the local piece; replicated vision weights then need their
gradients averaged over the group (DDP / FSDP default). A rank with an empty run
gives its vision weights no gradient (``.grad`` stays None there). Every rank
must run the backward (the gather's backward is a collective all-reduce).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reelrl.dist import env


@dataclass(frozen=True)
class RankShard:
    """What one rank encodes: a contiguous run of temporal groups of the flattened videos."""

    patch_start: int  # first row of pixel_values_videos
    patch_end: int  # one past the last row
    token_start: int  # first row of the encoder output
    token_end: int  # one past the last output row
    grid_thw: tuple[tuple[int, int, int], ...]  # local grid, one (t, h, w) per video piece

    @property
    def n_tokens(self) -> int:
        """Number of output embeddings this rank produces."""
        return self.token_end - self.token_start


def _split_points(weights: list[int], world: int) -> list[int]:
    """Boundaries ``0 = b_0 <= ... <= b_P = len(weights)`` giving near-equal weight sums per part."""
    cum = [0]
    for w in weights:
        cum.append(cum[-1] + w)
    total = cum[-1]
    bounds = [0]
    for r in range(1, world):
        target = total * r / world
        # the cut (after unit i) whose prefix sum is closest to the target, never moving backwards
        best = min(range(bounds[-1], len(weights) + 1), key=lambda i: (abs(cum[i] - target), -i))
        bounds.append(best)
    bounds.append(len(weights))
    return bounds


def plan_shards(video_grid_thw: Tensor, world: int, spatial_merge_size: int) -> list[RankShard]:
    """Split the temporal groups of all videos into ``world`` contiguous, near-equal runs.

    ``video_grid_thw`` [n_videos, 3] is the processor's (t, h, w) grid in patches.
    Every rank computes the same plan from the same grid, so no sizes need exchanging.
    """
    if video_grid_thw.ndim != 2 or video_grid_thw.shape[1] != 3:
        raise ValueError(
            f"reelrl.dist.sharded_vision: video_grid_thw must be [n_videos, 3], got {tuple(video_grid_thw.shape)}"
        )
    merge2 = spatial_merge_size * spatial_merge_size
    units: list[tuple[int, int, int]] = []  # (video index, h, w) per temporal group
    for v, (t, h, w) in enumerate(video_grid_thw.tolist()):
        if h % spatial_merge_size or w % spatial_merge_size:
            raise ValueError(
                f"reelrl.dist.sharded_vision: video {v} grid (h={h}, w={w}) is not divisible by "
                f"spatial_merge_size={spatial_merge_size}"
            )
        units.extend((v, h, w) for _ in range(t))
    patches = [h * w for _, h, w in units]
    bounds = _split_points(patches, world)
    patch_off = [0]
    for n in patches:
        patch_off.append(patch_off[-1] + n)
    shards = []
    for r in range(world):
        a, b = bounds[r], bounds[r + 1]
        grid: list[list[int]] = []  # runs of the same video -> one (t, h, w) row each
        for i in range(a, b):
            v, h, w = units[i]
            if grid and grid[-1][3] == v:
                grid[-1][0] += 1
            else:
                grid.append([1, h, w, v])
        shards.append(
            RankShard(
                patch_start=patch_off[a],
                patch_end=patch_off[b],
                token_start=patch_off[a] // merge2,
                token_end=patch_off[b] // merge2,
                grid_thw=tuple((t, h, w) for t, h, w, _ in grid),
            )
        )
    return shards


def _out_dim(visual: nn.Module) -> int:
    """Width of the vision tower's merged output (``config.out_hidden_size``)."""
    cfg = getattr(visual, "config", None)
    dim = getattr(cfg, "out_hidden_size", None)
    if dim is None:
        raise ValueError("reelrl.dist.sharded_vision: the vision tower's config has no out_hidden_size")
    return int(dim)


def encode_video_sharded(
    visual: nn.Module, pixel_values_videos: Tensor, video_grid_thw: Tensor, group: env.Group = None
) -> Tensor:
    """Encode videos with their temporal groups sharded over ``group``; every rank gets all embeddings.

    ``visual`` is a Qwen2-VL / Qwen2.5-VL vision tower (``model.model.visual``),
    ``pixel_values_videos`` [n_patches, C*tp*p*p] and ``video_grid_thw`` [n_videos, 3]
    are the processor outputs (identical on every rank). Returns [n_patches / m^2, D],
    equal to ``visual(pixel_values_videos, grid_thw=video_grid_thw).pooler_output``.
    Differentiable (see the module docstring for the gradient convention). Without a
    process group this is the plain unsharded call.
    """
    merge = int(getattr(visual, "spatial_merge_size"))
    n_patches = int(video_grid_thw.prod(-1).sum())
    if pixel_values_videos.shape[0] != n_patches:
        raise ValueError(
            f"reelrl.dist.sharded_vision: pixel_values_videos has {pixel_values_videos.shape[0]} rows, "
            f"video_grid_thw {video_grid_thw.tolist()} implies {n_patches}"
        )
    dtype = getattr(visual, "dtype", pixel_values_videos.dtype)
    pixels = pixel_values_videos.to(dtype)  # [n_patches, C*tp*p*p]
    world = env.world_size(group)
    if world == 1:
        return visual(pixels, grid_thw=video_grid_thw).pooler_output  # [n_tokens, D]
    shards = plan_shards(video_grid_thw, world, merge)
    mine = shards[env.rank(group)]
    if mine.grid_thw:
        local_grid = torch.tensor(mine.grid_thw, dtype=video_grid_thw.dtype, device=video_grid_thw.device)  # [k, 3]
        local_pixels = pixels[mine.patch_start : mine.patch_end]  # [n_local_patches, C*tp*p*p]
        local = visual(local_pixels, grid_thw=local_grid).pooler_output  # [n_local_tokens, D]
    else:
        local = pixels.new_zeros(0, _out_dim(visual))  # [0, D]
        if torch.is_grad_enabled() and any(p.requires_grad for p in visual.parameters()):
            # keep the gather in this rank's autograd graph: its backward all-reduce is collective
            local.requires_grad_(True)
    sizes = [s.n_tokens for s in shards]
    return env.all_gather_autograd(local, sizes=sizes, dim=0, group=group)  # [n_tokens, D]
