"""Are the gym's rendered object IDs legible to a model's vision tower? A linear probe on its video tokens.

    python benchmarks/id_probe.py [--model DIR] [--seeds 0 1 2] [--samples 400] [--side 84] [--threads T]

The stvg_r1 recipe's ``id_grounding`` videos carry each object's ID as a digit
label (reelrl.gym.id_grounding). Every (object, temporal patch) in which the
label sits in the same merged video token on every frame of the patch gives
one example: that merged token (what the language model reads of it) with the
ID digit (1-9) as its class. A linear softmax probe is fit on 70 % of the
examples and scored on the other 30 %, beside the same probe fit on the raw
pixels of the token's 28 x 28 region (every frame of the patch). The pixels' score is what
a linear reader of that region gets; the token's score is how much of it the
tower passes on to the language model. Chance is 1/9.

Without ``--model`` the probe runs on the tiny random-init checkpoint of the
stvg_r1 recipe's shape, one per ``--seeds`` value (its init seed), built in a
temporary directory: towers of the shape every stvg_r1 run starts from (frozen there). With
``--model DIR`` (e.g. a local Qwen2.5-VL-7B-Instruct) it probes that tower
once; pass ``--side`` as a multiple of 28 the checkpoint accepts.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from reelrl.gym import TASKS, GymSpec
from reelrl.gym.id_grounding import label_cell, object_box
from reelrl.models.load import load_model_and_processor
from reelrl.models.processing import patchify_frames
from reelrl.models.tiny import build_tiny
from reelrl.models.vlm import VLM
from reelrl.pipeline import load_recipe


def examples(vlm: VLM, spec, gym: GymSpec, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(merged tokens [N, D], region pixels [N, tp*28*28*3], ID classes [N]) from ``n`` id_grounding videos."""
    merge = spec.patch_size * spec.merge_size  # 28 px per merged token side
    tp = spec.temporal_patch_size  # frames per temporal patch
    rng = np.random.default_rng(0)
    task = TASKS.get("id_grounding")
    toks, pix, ys = [], [], []
    for _ in range(n):
        s = task(rng, gym)
        x, grid = patchify_frames(s.frames, spec)  # [N_patches, C*tp*p*p]
        with torch.no_grad():
            out = vlm.encode_videos(x, torch.tensor([grid]))
        gt, gh, gw = grid
        emb = torch.cat(list(out.pooler_output)).reshape(gt, gh // spec.merge_size, gw // spec.merge_size, -1)
        for obj in s.meta["objects"]:
            for t in range(gt):
                b0, b1 = object_box(obj, tp * t), object_box(obj, tp * t + tp - 1)
                if b0 is None or b1 is None:
                    continue
                c0 = label_cell(b0, gym.height, gym.width)
                if c0 != label_cell(b1, gym.height, gym.width):
                    continue
                my, mx = c0[0] // merge, c0[1] // merge
                toks.append(emb[t, my, mx].float().numpy())  # [D]
                region = s.frames[tp * t:tp * (t + 1), my * merge:(my + 1) * merge, mx * merge:(mx + 1) * merge]
                pix.append(region.astype(np.float32).ravel() / 255.0)  # [tp*28*28*3]
                ys.append(obj["id"] - 1)
    return np.stack(toks), np.stack(pix), np.array(ys)


def probe(features: np.ndarray, labels: np.ndarray, seed: int = 0, steps: int = 600) -> tuple[float, float]:
    """(train, held-out) accuracy of an L2-regularised linear softmax probe on standardised features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(features)  # [N, D]
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)  # [N, D]
    y = torch.from_numpy(labels)  # [N]
    idx = torch.randperm(len(y), generator=g)
    tr, te = idx[: int(0.7 * len(y))], idx[int(0.7 * len(y)):]
    w = torch.zeros(x.shape[1], 9, requires_grad=True)
    b = torch.zeros(9, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[tr] @ w + b, y[tr]) + 1e-3 * (w**2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = lambda i: float(((x[i] @ w + b).argmax(1) == y[i]).float().mean())  # noqa: E731
        return acc(tr), acc(te)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint to probe (default: tiny random-init ones)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="init seeds of the tiny checkpoints")
    ap.add_argument("--samples", type=int, default=400, help="id_grounding videos per checkpoint")
    ap.add_argument("--side", type=int, default=84, help="frame side in pixels (the stvg_r1 gym's: 84)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe("stvg_r1")  # its gym spec and tiny-model shape
    gym = GymSpec(**{**recipe.data.gym.spec, "height": args.side, "width": args.side})
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(str(args.model), args.model)] if args.model else [
            (f"tiny, init seed {s}", build_tiny(Path(tmp) / f"tiny{s}", None, **{**recipe.model.tiny, "seed": s},
                                                min_pixels=args.side**2, max_pixels=args.side**2)) for s in args.seeds]
        for name, path in runs:
            model, processor = load_model_and_processor(path)
            toks, pix, ys = examples(VLM(model), processor.spec, gym, args.samples)
            results.append((name, len(ys), probe(toks, ys), probe(pix, ys), toks.shape[1]))
    table = Table(title=f"ID digit from one merged video token: linear probe, held-out accuracy (chance {1 / 9:.3f}), "
                        f"{args.side} px id_grounding frames")
    for col in ("checkpoint", "examples", "token: train / held-out", "pixels: train / held-out", "token dim"):
        table.add_column(col, justify="left" if col == "checkpoint" else "right")
    for name, n, (tt, th), (pt, ph), dim in results:
        table.add_row(name, str(n), f"{tt:.3f} / {th:.3f}", f"{pt:.3f} / {ph:.3f}", str(dim))
    console = Console()
    console.print(table)
    if len(results) > 1:
        held = [r[2][1] for r in results]
        console.print(f"token held-out accuracy over checkpoints: {statistics.mean(held):.3f} ± "
                      f"{statistics.stdev(held):.3f}")


if __name__ == "__main__":
    main()
