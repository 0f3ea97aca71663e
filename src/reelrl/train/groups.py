"""What one RL step works on: a prompt view (what gets encoded), a group (its G completions), and the
statistics of a group that every data-parallel rank sees (:class:`GroupStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from torch import Tensor

from reelrl.data.schema import VideoRow
from reelrl.models.vlm import EncodedPrompt
from reelrl.rollout.hf import Rollout
from reelrl.rollout.multiturn import EpisodeGroup
from reelrl.video.transforms import FrameTransform


@dataclass(frozen=True)
class PromptView:
    """What is encoded for one row: the (possibly rewritten) row, named frame transforms, a hint.

    Hooks build views (QA inversion rewrites the row, curricula and T-GRPO add
    frame transforms, DeepVideo-R1 adds noise or a hint); every view goes
    through the same :class:`~reelrl.data.prompts.PromptEncoder` path, so
    the processor's temporal RoPE inputs are kept for each of them. The
    transform names form the encoder's cache key, so a name must determine its
    transform exactly (include any seed in it).
    """

    row: VideoRow
    transforms: tuple[tuple[str, FrameTransform], ...] = ()
    hint: str | None = None

    def with_transform(self, name: str, fn: FrameTransform) -> "PromptView":
        """This view with one more frame transform applied after the others."""
        return replace(self, transforms=(*self.transforms, (name, fn)))

    def with_hint(self, hint: str) -> "PromptView":
        """This view with ``hint`` appended to the prompt (after any earlier hint)."""
        return replace(self, hint=f"{self.hint}\n{hint}" if self.hint else hint)

    @property
    def variant(self) -> str:
        return "+".join(name for name, _ in self.transforms)

    def frame_transform(self) -> FrameTransform | None:
        """The composed frame transform, or None when there is none."""
        if not self.transforms:
            return None
        fns = [fn for _, fn in self.transforms]

        def composed(frames: np.ndarray) -> np.ndarray:
            for fn in fns:
                frames = fn(frames)  # [T, H, W, 3]
            return frames

        return composed

    def encode(self, encoder) -> EncodedPrompt | None:
        """Encode through ``encoder.try_encode`` (None when the video cannot be read)."""
        return encoder.try_encode(self.row, transform=self.frame_transform(), variant=self.variant, hint=self.hint)

    def prefetch(self, encoder) -> None:
        """Start encoding this view in the encoder's background thread (collected by :meth:`encode`)."""
        encoder.prefetch([self.row], transform=self.frame_transform(), variant=self.variant, hint=self.hint)


@dataclass
class Group:
    """One prompt and its G completions, with everything the update needs."""

    row: VideoRow
    prompt: EncodedPrompt
    vision: dict | None  # cached video embeddings (no grad) or None
    rollout: Rollout
    texts: list[str]
    rewards: Tensor | None = None  # [G]
    advantages: Tensor | None = None  # [G]
    old_logp: Tensor | None = None  # [G, T]
    ref_logp: Tensor | None = None  # [G, T]
    columns: dict[str, Tensor] = field(default_factory=dict)  # per-reward values [G]
    index: int = -1  # position of the source row in the trainer's row list
    key: tuple[int, ...] = ()  # rollout seed key within the step
    view: PromptView | None = None  # what was encoded (hooks re-encode variants of it)
    seq_keep: Tensor | None = None  # [G] loss weight per completion (DAPO overlong filtering); None = all 1
    token_weights: Tensor | None = None  # [G, T] per-token loss weights (TW-GRPO), no grad
    episode: EpisodeGroup | None = None  # multi-turn rollouts (rl.env): each trajectory's turns and their columns

    @property
    def loss_mask(self) -> Tensor:
        """Completion mask [G, T] times the per-completion keep weights."""
        m = self.rollout.mask  # [G, T]
        return m if self.seq_keep is None else m * self.seq_keep.to(m.device)[:, None]  # [G, T]


@dataclass(frozen=True)
class GroupStats:
    """One group's scores as every rank sees them: the rank that rolled it out holds the tokens, the others this.

    Gathered over the data-parallel ranks after scoring (in ``key`` order, which
    is the one-process order of the step's groups), so row sources, group
    filters, advantages over the batch, loss normalisers and metrics see the
    whole step on every rank.
    """

    key: tuple[int, ...]  # the group's rollout seed key: its place in the step
    index: int  # row index
    rewards: Tensor  # [G]
    lengths: Tensor  # [G]
    truncated: Tensor  # [G] bool
    columns: dict[str, Tensor]  # per-reward values [G]
    tokens: float  # completion tokens that carry loss (loss-mask sum)

    @classmethod
    def of(cls, g: Group) -> "GroupStats":
        return cls(
            key=g.key,
            index=g.index,
            rewards=g.rewards.detach().cpu(),  # [G]
            lengths=g.rollout.lengths.cpu(),  # [G]
            truncated=g.rollout.truncated.cpu(),  # [G]
            columns={k: v.detach().cpu() for k, v in g.columns.items()},
            tokens=float(g.loss_mask.sum()),
        )
