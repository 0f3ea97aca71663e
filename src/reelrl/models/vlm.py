"""A thin adapter over a transformers video-language model.

Everything the trainer needs from the model goes through :class:`VLM`:
encoding the video once (``encode_vision``), the 3D (temporal/height/width)
RoPE positions of a prompt, prefilling a prompt into a KV cache, and scoring
completions. The model itself stays a plain transformers model, so the same
code serves the tiny checkpoint and a real Qwen2-VL / Qwen2.5-VL / Qwen3-VL.

The temporal RoPE input ``second_per_grid_ts`` enters :meth:`VLM.positions`,
which every pass (rollout, old/reference log-probs, update) uses, so no pass
can silently drop it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from reelrl.models.dedupe import encode_unique
from reelrl.models.precision import autocast
from reelrl.models.processing import IGNORE_INDEX

# Keys of the processor output that describe the video (everything but the text).
VISION_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
# Keys of the images of later turns in a whole-episode SFT example (reelrl.models.turns.extend_sft_example).
IMAGE_KEYS = ("pixel_values", "image_grid_thw")
#: Keys of a prompt's own visual inputs: its video and its extra images (``VideoRow.images``, PRIMO R1's
#: initial- and current-state images), all encoded once per prompt by :meth:`VLM.encode_vision`.
PROMPT_KEYS = VISION_KEYS + IMAGE_KEYS
# Token tensors of an SFT example and their padding value (None: the tokenizer's pad id).
PAD_KEYS = {"input_ids": None, "attention_mask": 0, "labels": IGNORE_INDEX, "mm_token_type_ids": 0}


@dataclass
class EncodedPrompt:
    """One prompt (video + text), tokenised and preprocessed, batch size 1."""

    key: str  # unique id of the prompt (row id plus frame-sampling variant)
    input_ids: Tensor  # [1, P]
    vision_inputs: dict[str, Tensor]  # pixel_values_videos [n, d], video_grid_thw [1, 3], second_per_grid_ts [1]
    #                                   (+ pixel_values [m, d], image_grid_thw [k, 3] for a prompt with images)
    mm_token_type_ids: Tensor | None = None  # [1, P] 0 text, 1 image, 2 video
    positions: Tensor | None = None  # [3, 1, P] filled by VLM.positions
    rope_delta: int = 0  # text position after the prompt minus its length
    meta: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


def _find_core(model: torch.nn.Module) -> torch.nn.Module:
    """The inner module that owns ``get_rope_index`` (Qwen-VL family), or the model itself."""
    for m in model.modules():
        if hasattr(m, "get_rope_index") and hasattr(m, "get_video_features"):
            return m
    return model


class VLM:
    """Adapter around a (possibly LoRA-wrapped) transformers VLM."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.wrapped = model
        # peft wraps the model; its injected LoRA layers live inside the base model.
        self.model = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.core = _find_core(self.model)
        self.has_mrope = hasattr(self.core, "get_rope_index")
        #: autocast dtype of the forward passes (fp32 master weights, :mod:`reelrl.models.precision`); None = none
        self.compute_dtype: torch.dtype | None = None
        #: encode identical later-turn images / clips once (:func:`reelrl.models.dedupe.encode_unique`);
        #: False is the baseline of ``benchmarks/multiturn.py``
        self.dedupe_visual_inputs = True

    def autocast(self):
        """The context every forward pass of a stage runs in: autocast to :attr:`compute_dtype`, or nothing."""
        return autocast(self.device, self.compute_dtype)

    def metrics(self) -> dict[str, float]:
        """Counters of how the passes since the last call ran (none here; see the sequence-parallel VLM)."""
        return {}

    def vision_tower(self) -> torch.nn.Module | None:
        return getattr(self.core, "visual", None) or getattr(self.core, "vision_tower", None)

    def has_deepstack(self) -> bool:
        """Whether the tower injects features into the first decoder layers (Qwen3-VL's deepstack)."""
        visual = self.vision_tower()
        return visual is not None and bool(len(getattr(visual, "deepstack_merger_list", ()) or ()))

    def vision_trainable(self) -> bool:
        """Whether any vision-tower weight trains (then the update recomputes embeddings with gradient)."""
        vis = self.vision_tower()
        return vis is not None and any(p.requires_grad for p in vis.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ vision
    def encode_vision(self, prompt: EncodedPrompt) -> dict[str, BaseModelOutputWithPooling]:
        """Run the vision tower once per visual input kind; the result is passed as ``mm_encoder_outputs``.

        ``{"video": ...}``, plus ``"image"`` (all the prompt's extra images, in prompt order) for a prompt
        with images: the tower sees each kind in one call, and the model scatters image embeddings into the
        image placeholders and video embeddings into the video placeholders, each in token order.
        """
        vi = prompt.vision_inputs
        out = {}
        if "pixel_values_videos" in vi:  # an image-only prompt (the served progress conversation) has no video
            out["video"] = self.core.get_video_features(vi["pixel_values_videos"], vi["video_grid_thw"],
                                                        return_dict=True)
        if "pixel_values" in vi:
            out["image"] = self.encode_images(vi["pixel_values"], vi["image_grid_thw"])
        return out

    @staticmethod
    def repeat_vision(vision: dict[str, BaseModelOutputWithPooling], n: int) -> dict[str, BaseModelOutputWithPooling]:
        """The same video's embeddings for ``n`` copies of the prompt (no recomputation)."""
        return VLM.merge_vision([vision] * n)

    @staticmethod
    def merge_vision(visions: list[dict[str, BaseModelOutputWithPooling]]) -> dict[str, BaseModelOutputWithPooling]:
        """The embeddings of several prompts' videos, in batch order, as one ``mm_encoder_outputs``.

        Per-video fields (``pooler_output``: a tuple with one ``[tokens, D]``
        tensor per video; Qwen3-VL's ``deepstack_features``: one such tuple per
        layer) are concatenated video after video; the model scatters them into
        the placeholders of the batch in row-major order.
        """
        if len(visions) == 1:
            return visions[0]
        out = {}
        kinds = list(dict.fromkeys(k for v in visions for k in v))  # prompts with and without images mix
        for kind in kinds:
            parts = [v[kind] for v in visions if kind in v]
            first = parts[0]
            fields = {}
            for name in first.keys():
                if name == "last_hidden_state":  # the unsplit tower output: not read once pooled
                    continue
                fields[name] = _concat_videos([p[name] for p in parts])
            out[kind] = type(first)(**fields)
        return out

    @staticmethod
    def select_videos(vision: BaseModelOutputWithPooling, start: int, stop: int) -> BaseModelOutputWithPooling:
        """Videos ``start .. stop-1`` of one tower output (its per-video fields sliced; see :meth:`merge_vision`)."""
        fields = {}
        for name in vision.keys():
            v = vision[name]
            if name == "last_hidden_state":
                continue
            if isinstance(v, (tuple, list)) and v and isinstance(v[0], (tuple, list)):
                fields[name] = [tuple(layer[start:stop]) for layer in v]  # per layer
            elif isinstance(v, (tuple, list)):
                fields[name] = tuple(v[start:stop])
            else:
                fields[name] = v
        return type(vision)(**fields)

    # --------------------------------------------------------------- positions
    def positions(self, prompt: EncodedPrompt) -> tuple[Tensor, int]:
        """3D RoPE positions of the prompt ``[3, 1, P]`` and the text offset after it."""
        if prompt.positions is None:
            ids = prompt.input_ids  # [1, P]
            if self.has_mrope and prompt.mm_token_type_ids is not None:
                vi = prompt.vision_inputs
                pos, delta = self.core.get_rope_index(
                    ids,
                    mm_token_type_ids=prompt.mm_token_type_ids,
                    image_grid_thw=vi.get("image_grid_thw"),
                    video_grid_thw=vi.get("video_grid_thw"),
                    second_per_grid_ts=vi.get("second_per_grid_ts"),
                    attention_mask=torch.ones_like(ids),
                )  # [3, 1, P], [1, 1]
                prompt.positions, prompt.rope_delta = pos, int(delta.reshape(-1)[0])
            else:
                pos = torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, 1, -1)  # [3, 1, P]
                prompt.positions, prompt.rope_delta = pos, 0
        return prompt.positions, prompt.rope_delta

    def sequence_positions(self, prompt: EncodedPrompt, ids: Tensor, types: Tensor, image_grid_thw: Tensor | None,
                           video_grid_thw: Tensor | None = None, second_per_grid_ts: Tensor | None = None) -> Tensor:
        """3D RoPE positions ``[3, 1, L]`` of a whole conversation: the prompt's video plus later turns' visual inputs.

        ``ids [1, L]`` starts with the prompt's tokens; ``types [1, L]`` are its
        modality ids (0 text, 1 image, 2 video); ``image_grid_thw [k, 3]`` the
        grids of the later images in order; ``video_grid_thw [m, 3]`` and
        ``second_per_grid_ts [m]`` those of the later video clips, which follow
        the prompt's video. A prompt's own images (``VideoRow.images``) come
        before the later turns' images, as their placeholders do. The positions
        of the prompt's part equal :meth:`positions`.
        """
        if not (self.has_mrope and prompt.mm_token_type_ids is not None):
            return torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, 1, -1)  # [3, 1, L]
        vi = prompt.vision_inputs
        if "image_grid_thw" in vi:
            first = vi["image_grid_thw"]  # [k0, 3] the prompt's images
            image_grid_thw = torch.cat([first, image_grid_thw.to(first)]) if image_grid_thw is not None else first
        grids, secs = vi.get("video_grid_thw"), vi.get("second_per_grid_ts")
        if video_grid_thw is not None:
            grids = torch.cat([grids, video_grid_thw.to(grids)]) if grids is not None else video_grid_thw  # [1+m, 3]
            if secs is not None and second_per_grid_ts is not None:
                secs = torch.cat([secs, second_per_grid_ts.to(secs)])  # [1+m]
        pos, _ = self.core.get_rope_index(
            ids, mm_token_type_ids=types, image_grid_thw=image_grid_thw, video_grid_thw=grids,
            second_per_grid_ts=secs, attention_mask=torch.ones_like(ids),
        )  # [3, 1, L]
        return pos

    def encode_images(self, pixel_values: Tensor, image_grid_thw: Tensor) -> BaseModelOutputWithPooling:
        """Run the vision tower on images (``pixel_values [N, d]``, ``image_grid_thw [k, 3]``): ``mm_encoder_outputs["image"]``.

        Identical images among the ``k`` are encoded once (:func:`reelrl.models.dedupe.encode_unique`;
        :attr:`dedupe_visual_inputs`).
        """
        return self._encode(self.core.get_image_features, pixel_values, image_grid_thw)

    def encode_videos(self, pixel_values_videos: Tensor, video_grid_thw: Tensor) -> BaseModelOutputWithPooling:
        """Run the vision tower on later turns' clips (``[N, d]``, ``video_grid_thw [m, 3]``): ``mm_encoder_outputs["video"]``.

        Identical clips among the ``m`` (the same streamed clip shown to every trajectory of a group) are
        encoded once (:func:`reelrl.models.dedupe.encode_unique`; :attr:`dedupe_visual_inputs`).
        """
        return self._encode(self.core.get_video_features, pixel_values_videos, video_grid_thw)

    def _encode(self, features, pixels: Tensor, grid: Tensor) -> BaseModelOutputWithPooling:
        encode = lambda x, g: features(x, g, return_dict=True)  # noqa: E731
        if not self.dedupe_visual_inputs or self.has_deepstack():  # per-layer features are not split per input
            return encode(pixels, grid)
        return encode_unique(encode, pixels, grid)

    def continuation_positions(self, prompt: EncodedPrompt, start: int, length: int, batch: int) -> Tensor:
        """Positions of text tokens ``start .. start+length-1`` after the prompt: ``[3, batch, length]``."""
        _, delta = self.positions(prompt)
        pos = torch.arange(start, start + length, device=prompt.input_ids.device) + delta  # [length]
        return pos.view(1, 1, -1).expand(3, batch, -1)  # [3, batch, length]

    # ----------------------------------------------------------------- forward
    def prefill_batch(self, prompts: list[EncodedPrompt], visions: list | None = None) -> "BatchPrefill":
        """Run several prompts in one left-padded forward pass (with gradient when enabled).

        ``visions[i]`` are prompt i's cached embeddings or None (then its
        video is encoded here). The padding is masked out and never a vision
        placeholder. Returns the last-position logits ``[B, V]``, the KV cache
        (batch B, ``P_max`` positions), its attention mask ``[B, P_max]`` and
        the text position of each prompt's first completion token ``[B]``.
        """
        if len(prompts) == 1:
            last, cache = self.prefill(prompts[0], visions[0] if visions else None)  # [1, V]
            return BatchPrefill(last, cache, *self.left_padding(prompts, [1]))
        visions = visions if visions is not None else [None] * len(prompts)
        visions = [v if v is not None else self.encode_vision(p) for p, v in zip(prompts, visions)]
        mask, start = self.left_padding(prompts, [1] * len(prompts))  # [B, P_max], [B]
        width = mask.shape[1]
        ids = torch.empty_like(mask)  # [B, P_max]
        pos = torch.zeros(3, *mask.shape, dtype=torch.long, device=mask.device)  # [3, B, P_max]
        for i, p in enumerate(prompts):
            pad = width - p.length
            ids[i, :pad] = p.input_ids[0, 0]  # the prompt's first (chat) token: never a vision placeholder
            ids[i, pad:] = p.input_ids[0]
            pos[:, i, pad:] = self.positions(p)[0][:, 0]
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            cache=DynamicCache(config=self.model.config),
            use_cache=True,
            logits_to_keep=1,
            mm_encoder_outputs=self.merge_vision(visions),
        )
        return BatchPrefill(out.logits[:, -1, :], out.cache, mask, start)  # [B, V]

    def left_padding(self, prompts: list[EncodedPrompt], counts: list[int]) -> tuple[Tensor, Tensor]:
        """The layout of a left-padded multi-prompt batch, prompt i taking ``counts[i]`` rows.

        Returns the attention mask ``[N, P_max]`` (0 on the padding before each
        shorter prompt) and the text position of each row's first completion
        token ``[N]`` (prompt length plus its RoPE offset). Both ways of
        building such a batch use it: one padded forward (:meth:`prefill_batch`)
        and stacking separately prefilled caches (:meth:`stack_prefills`).
        """
        width = max(p.length for p in prompts)
        device = prompts[0].input_ids.device
        mask = torch.cat([
            (torch.arange(width, device=device) >= width - p.length).long().expand(n, -1)
            for p, n in zip(prompts, counts)
        ])  # [N, P_max]
        start = torch.cat([
            torch.full((n,), p.length + self.positions(p)[1], dtype=torch.long, device=device)
            for p, n in zip(prompts, counts)
        ])  # [N]
        return mask, start

    def stack_prefills(
        self, prompts: list[EncodedPrompt], caches: list[DynamicCache], counts: list[int]
    ) -> tuple[DynamicCache, Tensor, Tensor]:
        """One decode batch from prompts prefilled one by one (each cache batch 1 or ``counts[i]``).

        Each cache is forked to its ``counts[i]`` rows and left-padded with
        zeros to the longest prompt, in the layout of :meth:`left_padding`.
        Rollouts prefill prompt by prompt so that a prompt's tokens do not
        depend on the other prompts of its batch (a padded forward differs in
        the last float bits); the update uses :meth:`prefill_batch`. Returns
        the cache (batch ``N = sum counts``), mask ``[N, P_max]`` and start ``[N]``.
        """
        mask, start = self.left_padding(prompts, counts)  # [N, P_max], [N]
        if len(caches) == 1:
            cache = caches[0]
            if cache.layers[0].keys.shape[0] != counts[0]:
                cache.batch_repeat_interleave(counts[0])
            return cache, mask, start
        width = mask.shape[1]
        cache = DynamicCache(config=self.model.config)
        for li in range(len(caches[0].layers)):
            keys, values = [], []
            for c, p, n in zip(caches, prompts, counts):
                k, v = c.layers[li].keys, c.layers[li].values  # [1 or n, H, P_i, D]
                if k.shape[0] != n:
                    k, v = k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)  # [n, H, P_i, D]
                pad = width - p.length
                keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))  # [n, H, P_max, D]
                values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
            cache.update(torch.cat(keys), torch.cat(values), li)  # [N, H, P_max, D]
        return cache, mask, start

    def completion_logits_many(
        self, prompts: list[EncodedPrompt], completions: list[Tensor], visions: list | None = None
    ) -> list[Tensor]:
        """:meth:`completion_logits` of several prompts in two forward passes (shared prefixes).

        All prompts prefill in one left-padded batch (:meth:`prefill_batch`);
        each cache is forked to its completions ``completions[i] [G_i, T_i]``
        and all ``sum G_i`` completions run in one batch (right-padded to the
        longest). Gradients flow back through every prefix. Returns
        ``[G_i, T_i, V]`` per prompt, equal to the one-prompt passes up to
        float rounding. Where a forward would drop the cache
        (:meth:`keeps_cache`), each prompt is scored alone without a shared prefix.
        """
        if not self.keeps_cache():
            visions = visions if visions is not None else [None] * len(prompts)
            return [self.completion_logits(p, c, v, share_prefix=False) for p, c, v in zip(prompts, completions, visions)]
        pre = self.prefill_batch(prompts, visions)
        sizes = [int(c.shape[0]) for c in completions]
        device = pre.logits.device
        rows = torch.repeat_interleave(torch.arange(len(prompts), device=device), torch.tensor(sizes, device=device))  # [N]
        width = max(int(c.shape[1]) for c in completions)
        toks = torch.zeros(len(rows), width, dtype=torch.long, device=device)  # [N, T_max]
        r = 0
        for c in completions:
            toks[r : r + c.shape[0], : c.shape[1]] = c
            r += c.shape[0]
        first = pre.logits[rows].unsqueeze(1)  # [N, 1, V]
        if width > 1:
            pre.cache.batch_select_indices(rows)
            mask = torch.cat([pre.mask[rows], torch.ones(len(rows), width - 1, dtype=pre.mask.dtype, device=device)], 1)
            rest = self.decode_step(toks[:, :-1], pre.cache, pre.start[rows], mask)  # [N, T_max-1, V]
            logits = torch.cat([first, rest], dim=1)  # [N, T_max, V]
        else:
            logits = first
        return [lg[:, : c.shape[1]] for lg, c in zip(logits.split(sizes), completions)]  # [G_i, T_i, V]

    def keeps_cache(self) -> bool:
        """Whether a forward pass now writes its KV cache.

        transformers' checkpointed decoder layers drop the cache (``cache=None``)
        in training mode with gradients enabled, so a prefix prefilled there
        would leave its completions attending to nothing; the shared-prefix
        scoring paths check this and score the full sequences instead.
        """
        if not (self.model.training and torch.is_grad_enabled()):
            return True
        return not any(getattr(m, "gradient_checkpointing", False) is True for m in self.model.modules())

    def _vision_kwargs(self, prompt: EncodedPrompt, vision, n: int) -> dict:
        """Either cached embeddings (``mm_encoder_outputs``) or raw pixels for ``n`` prompt copies."""
        if vision is not None:
            return {"mm_encoder_outputs": self.repeat_vision(vision, n) if n > 1 else vision}
        vi = prompt.vision_inputs
        out = {}
        if "pixel_values_videos" in vi:  # none in an image-only prompt
            out["pixel_values_videos"] = vi["pixel_values_videos"].repeat(n, 1)  # [n*patches, d]
            out["video_grid_thw"] = vi["video_grid_thw"].repeat(n, 1)  # [n, 3]
        if "pixel_values" in vi:
            out["pixel_values"] = vi["pixel_values"].repeat(n, 1)  # [n*image patches, d]
            out["image_grid_thw"] = vi["image_grid_thw"].repeat(n, 1)  # [n*k, 3]
        return out

    def prefill(self, prompt: EncodedPrompt, vision=None, copies: int = 1) -> tuple[Tensor, DynamicCache]:
        """Run the prompt: logits of its last position ``[copies, V]`` and its KV cache (batch ``copies``).

        ``copies > 1`` is the naive baseline: the prompt is processed ``copies``
        times in one batch (and, with ``vision=None``, the video is encoded
        ``copies`` times); the fast path prefills once and forks the cache.
        """
        pos, _ = self.positions(prompt)
        ids = prompt.input_ids.expand(copies, -1)  # [copies, P]
        out = self.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=pos.expand(3, copies, -1),  # [3, copies, P]
            cache=DynamicCache(config=self.model.config),
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits: [copies, P, V] would dwarf the KV cache
            **self._vision_kwargs(prompt, vision, copies),
        )
        return out.logits[:, -1, :], out.cache  # [copies, V]

    def step(self, tokens: Tensor, cache: DynamicCache, prompt: EncodedPrompt, start: int) -> Tensor:
        """Feed ``tokens [N, L]`` of one prompt at completion offsets ``start..``; returns logits ``[N, L, V]``."""
        n, length = tokens.shape
        first = torch.full((n,), prompt.length + start + self.positions(prompt)[1], device=tokens.device)  # [N]
        mask = torch.ones(n, prompt.length + start + length, dtype=torch.long, device=tokens.device)  # [N, P+start+L]
        return self.decode_step(tokens, cache, first, mask)

    def decode_step(self, tokens: Tensor, cache: DynamicCache, positions: Tensor, attention_mask: Tensor) -> Tensor:
        """Feed ``tokens [N, L]`` after a cached prefix, possibly a left-padded multi-prompt batch.

        ``positions [N]``: each row's text position of its first new token (its
        prompt's length plus RoPE offset plus the tokens already decoded);
        ``attention_mask [N, K + L]``: 0 on the padding before each shorter
        prompt, K = cache length. Returns logits ``[N, L, V]``.
        """
        length = tokens.shape[1]
        pos = positions.view(-1, 1) + torch.arange(length, device=tokens.device)  # [N, L]
        out = self.model(
            input_ids=tokens,
            attention_mask=attention_mask,
            position_ids=pos.unsqueeze(0).expand(3, -1, -1),  # [3, N, L]
            cache=cache,
            use_cache=True,
        )
        return out.logits  # [N, L, V]

    def completion_logits(
        self, prompt: EncodedPrompt, completions: Tensor, vision=None, share_prefix: bool = True
    ) -> Tensor:
        """Logits predicting each completion token: ``completions [G, T] -> [G, T, V]``.

        ``share_prefix`` prefills the prompt once and forks its KV cache for the G
        completions (gradients flow back through the shared prefix); otherwise the
        prompt is repeated G times in one full forward pass (the reference path),
        which is also taken where a forward would drop the KV cache (gradient
        checkpointing with gradients on, :meth:`keeps_cache`).
        """
        g, t = completions.shape
        if share_prefix and self.keeps_cache():
            last, cache = self.prefill(prompt, vision)  # [1, V]
            cache.batch_repeat_interleave(g)
            first = last.unsqueeze(1).expand(g, 1, -1)  # [G, 1, V]
            if t == 1:
                return first
            rest = self.step(completions[:, :-1], cache, prompt, 0)  # [G, T-1, V]
            return torch.cat([first, rest], dim=1)  # [G, T, V]
        pos, _ = self.positions(prompt)
        ids = torch.cat([prompt.input_ids.expand(g, -1), completions], dim=1)  # [G, P+T]
        positions = torch.cat(
            [pos.expand(3, g, -1), self.continuation_positions(prompt, prompt.length, t, g)], dim=2
        )  # [3, G, P+T]
        out = self.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=positions,
            use_cache=False,
            logits_to_keep=t + 1,  # positions P-1 .. P+T-1 only
            **self._vision_kwargs(prompt, vision, g),
        )
        return out.logits[:, :-1, :]  # [G, T, V]


    # ------------------------------------------------------------- supervised
    def sft_nll(self, examples: list[dict[str, Tensor]], pad_id: int) -> Tensor:
        """Summed next-token NLL of the labelled tokens of SFT ``examples`` (``encode_sft_example`` dicts): scalar.

        One right-padded forward over the whole conversations (:func:`collate`);
        the model builds the 3D RoPE positions from ``mm_token_type_ids``.
        """
        dev = self.device
        batch = collate(examples, pad_id)
        labels = batch.pop("labels").to(dev)  # [B, L]
        out = self.model(**{k: v.to(dev) for k, v in batch.items()}, use_cache=False)
        return labelled_nll(out.logits, labels)

    @staticmethod
    def sft_prompt(example: dict[str, Tensor], device: torch.device | None = None) -> tuple[EncodedPrompt, Tensor]:
        """An SFT example as a prompt (its unlabelled head) and a completion ``[1, A]`` (its labelled tail).

        ``-log p(completion | prompt)`` summed is :meth:`sft_nll` of the example;
        the completion scorers (e.g. sequence-parallel ones) compute it this way.
        Raises ValueError when the labelled tokens are not one run at the end.
        """
        ids, labels = example["input_ids"], example["labels"]  # [1, L]
        keep = labels[0] != IGNORE_INDEX  # [L]
        p = int((~keep).sum())
        if p == 0 or not bool(keep[p:].all()) or bool(keep[:p].any()):
            raise ValueError("SFT example: the labelled tokens must be one run at the end of the sequence")
        dev = device if device is not None else ids.device
        vision = {k: example[k].to(dev) for k in PROMPT_KEYS if k in example}
        tt = example.get("mm_token_type_ids")
        prompt = EncodedPrompt(key="sft", input_ids=ids[:, :p].to(dev), vision_inputs=vision,
                               mm_token_type_ids=tt[:, :p].to(dev) if tt is not None else None)
        return prompt, ids[:, p:].to(dev)  # [1, A]


@dataclass
class BatchPrefill:
    """Several prompts prefilled in one left-padded batch (see :meth:`VLM.prefill_batch`)."""

    logits: Tensor  # [B, V] next-token logits after each prompt
    cache: DynamicCache  # batch B, P_max positions
    mask: Tensor  # [B, P_max] 0 on left padding
    start: Tensor  # [B] text position of each prompt's first completion token


def _concat_videos(values: list):
    """Concatenate one per-video field over several prompts (see :meth:`VLM.merge_vision`)."""
    first = values[0]
    if isinstance(first, Tensor):
        return torch.cat(values)
    if isinstance(first, (tuple, list)) and first and isinstance(first[0], (tuple, list)):
        return [tuple(t for v in layer for t in v) for layer in zip(*values)]  # per layer, video after video
    if isinstance(first, (tuple, list)):
        return tuple(t for v in values for t in v)
    return first


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probability of ``tokens [N, T]`` under ``logits [N, T, V]`` -> ``[N, T]`` (float32)."""
    logits = logits.float()  # [N, T, V]
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [N, T]
    return picked - torch.logsumexp(logits, dim=-1)  # [N, T]


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution ``[N, T, V] -> [N, T]`` (no gradient)."""
    with torch.no_grad():
        logp = torch.log_softmax(logits.float(), dim=-1)  # [N, T, V]
        return -(logp.exp() * logp).sum(-1)  # [N, T]


def collate(examples: list[dict[str, Tensor]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad the token tensors of SFT examples ``[1, L_i] -> [B, L]`` and concatenate their video tensors."""
    width = max(int(e["input_ids"].shape[1]) for e in examples)
    out: dict[str, Tensor] = {}
    for key, fill in PAD_KEYS.items():
        if key not in examples[0]:
            continue
        fill = pad_id if fill is None else fill
        rows = []
        for e in examples:
            t = e[key]  # [1, L_i]
            pad = torch.full((1, width - t.shape[1]), fill, dtype=t.dtype)  # [1, L - L_i]
            rows.append(torch.cat([t, pad], dim=1))
        out[key] = torch.cat(rows, dim=0)  # [B, L]
    for key in VISION_KEYS:
        if key in examples[0]:
            out[key] = torch.cat([e[key] for e in examples], dim=0)
    for key in IMAGE_KEYS:  # later turns' images (whole-episode SFT examples), in batch order
        parts = [e[key] for e in examples if key in e]
        if parts:
            out[key] = torch.cat(parts, dim=0)
    return out


def labelled_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Summed next-token NLL of ``labels [B, L]`` (IGNORE_INDEX where no loss) under ``logits [B, L, V]``: scalar, float32."""
    shift_logits = logits[:, :-1, :].float()  # [B, L-1, V]
    shift_labels = labels[:, 1:]  # [B, L-1]
    return torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX,
                                             reduction="sum")
