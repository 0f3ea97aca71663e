"""VLM.encode_videos / encode_images encode identical inputs once (reelrl.models.dedupe.encode_unique): the same
embeddings and gradients as encoding every copy, with fewer patches through the tower."""

from __future__ import annotations

import torch

from reelrl.models.vlm import VLM
from tests.test_dist import PATCH_DIM, tiny_model

GRID = [2, 4, 4]  # 2 temporal groups of 4x4 patches: 32 patches -> 8 tokens


def clips(order: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ``[32 * len(order), d]`` and grids of clips drawn from 3 distinct ones, in ``order``."""
    g = torch.Generator().manual_seed(3)
    distinct = [torch.randn(32, PATCH_DIM, generator=g) for _ in range(3)]
    return torch.cat([distinct[i] for i in order]), torch.tensor([GRID] * len(order))


def counted(vlm: VLM) -> list[int]:
    """Patches seen by the vision tower per call."""
    calls: list[int] = []
    vlm.vision_tower().register_forward_pre_hook(lambda m, args, kw: calls.append(int(args[0].shape[0])),
                                                 with_kwargs=True)
    return calls


def test_identical_clips_are_encoded_once_with_equal_embeddings_and_gradients() -> None:
    order = [0, 1, 0, 2, 1, 0]  # 6 clips, 3 distinct, repeats out of order
    pixels, grid = clips(order)
    results = {}
    for dedupe in (True, False):
        model = tiny_model()
        vlm = VLM(model)
        vlm.dedupe_visual_inputs = dedupe
        calls = counted(vlm)
        out = vlm.encode_videos(pixels, grid)
        emb = out.pooler_output
        assert len(emb) == 6 and all(e.shape == (8, 64) for e in emb)
        w = torch.linspace(-1, 1, 6 * 8 * 64).view(6, 8, 64)
        (torch.stack(list(emb)) * w).sum().backward()  # every copy gets its own weight
        results[dedupe] = (emb, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, calls)
    (shared, g_shared, calls_shared), (plain, g_plain, calls_plain) = results[True], results[False]
    assert calls_shared == [3 * 32] and calls_plain == [6 * 32]
    for a, b in zip(shared, plain):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert shared[0] is shared[2] and not torch.equal(shared[0], shared[1])
    assert g_shared.keys() == g_plain.keys() and any(k.startswith("model.visual.") for k in g_shared)
    for n in g_plain:
        torch.testing.assert_close(g_shared[n], g_plain[n], atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


def test_distinct_inputs_take_the_plain_path_and_near_copies_are_not_merged() -> None:
    pixels, grid = clips([0, 1, 2])
    vlm = VLM(tiny_model())
    calls = counted(vlm)
    with torch.no_grad():
        plain = vlm.encode_videos(pixels, grid).pooler_output
        near = pixels.clone()
        near[32:64] = pixels[:32]  # clip 1 becomes clip 0 ...
        near[63, PATCH_DIM - 1] += 1e-3  # ... but for one value: still distinct
        out = vlm.encode_videos(near, grid).pooler_output
        images = vlm.encode_images(torch.cat([pixels[:16], pixels[:16]]), torch.tensor([[1, 4, 4], [1, 4, 4]]))
    assert calls == [96, 96, 16]  # nothing merged, then the two equal images encoded once
    assert not torch.equal(out[0], out[1])
    torch.testing.assert_close(out[2], plain[2], atol=1e-6, rtol=0)
    assert images.pooler_output[0] is images.pooler_output[1] and images.pooler_output[0].shape == (4, 64)
