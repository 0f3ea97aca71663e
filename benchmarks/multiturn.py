"""Streaming (VST) episodes: the G trajectories of a group share each clip's decode and vision encoding.

Every trajectory of a streaming group sees the same clips, so the rollout
(``rollout_episodes``: the clip appended to each trajectory's cached context)
and the update's scoring with a training vision tower
(``continuation_logits(..., recompute_images=True)`` + backward) can run the
tower once per distinct clip (:func:`reelrl.models.dedupe.encode_unique`) instead
of once per trajectory. This measures both passes with the dedupe on and off
(``VLM.dedupe_visual_inputs``, the baseline, in the same run, interleaved),
over one group of ``--group`` trajectories of a ``stream_order`` row (four
2-s clips), each turn exactly ``--tokens`` tokens (no early stop, so both arms
do the same work). The model is the tiny Qwen2.5-VL architecture at the given
widths (random init): the gain grows with the tower's share of the compute,
which is larger in a real checkpoint's 32-block ViT than in the default tiny one.

    python benchmarks/multiturn.py [--group 8] [--size 112] [--vision-depth 4] [--vision-hidden 256] \
        [--layers 4] [--hidden 256] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import load_jsonl
from reelrl.envs import ENVS
from reelrl.envs.base import prompt_row
from reelrl.gym import GymSpec, generate_gym
from reelrl.models.load import load_model_and_processor
from reelrl.models.tiny import build_tiny, default_corpus
from reelrl.models.turns import TurnEncoder
from reelrl.models.vlm import VLM
from reelrl.rollout.hf import SamplingParams, make_generators
from reelrl.rollout.multiturn import EpisodeRequest, continuation_logits, rollout_episodes
from reelrl.video.sample import VideoSampling


def setup(args: argparse.Namespace, work: Path):
    gym = work / "gym"
    generate_gym(gym, GymSpec(families=["stream_order"], frames=32, height=args.size, width=args.size), 2, 0, 2,
                 progress=False)
    rows = [prompt_row("streaming")(r) for r in load_jsonl(gym / "train.jsonl")]
    texts = list(default_corpus()) + [r.prompt_text() for r in rows]
    model_dir = build_tiny(work / "model", texts, hidden_size=args.hidden, num_layers=args.layers,
                           intermediate_size=4 * args.hidden, vision_depth=args.vision_depth,
                           vision_hidden=args.vision_hidden, seed=0)
    model, processor = load_model_and_processor(model_dir)
    pixels = args.size * args.size
    enc = PromptEncoder(processor, VideoSampling(fps=2.0, min_pixels=pixels, max_pixels=pixels), "vst")
    row = max(rows, key=lambda r: r.meta["stream"]["question_after"])
    return VLM(model), processor, enc, row


def measure(vlm: VLM, processor, enc: PromptEncoder, row, args: argparse.Namespace) -> dict[str, float]:
    """Seconds of one group's rollout and of its scoring + backward, and the patches the tower saw."""
    prompt, video = enc.encode(row), enc.frames(row)
    vision = vlm.encode_vision(prompt)  # the first clip: once per group either way, not counted
    patches: list[int] = []
    hook = vlm.vision_tower().register_forward_pre_hook(lambda m, a: patches.append(int(a[0].shape[0])))
    tok = processor.tokenizer
    params = SamplingParams(max_new_tokens=args.tokens, temperature=1.0, eos_ids=(), pad_id=tok.pad_token_id,
                            suppress_ids=(processor.image_token_id, processor.video_token_id))
    turns = TurnEncoder(processor, system=enc.system)
    t0 = time.perf_counter()
    envs = [ENVS.get("streaming")(row, video) for _ in range(args.group)]
    (ep,) = rollout_episodes(vlm, turns, [EpisodeRequest(prompt, envs, make_generators(0, args.group), vision)],
                             params)
    t1 = time.perf_counter()
    rollout_patches = sum(patches)
    vlm.model.zero_grad(set_to_none=True)
    logits = continuation_logits(vlm, prompt, ep.rollout.tokens, ep.rollout.context, vision,
                                 share_prefix=True, recompute_images=True)  # [G, T, V]
    logits.float().logsumexp(-1).mean().backward()
    t2 = time.perf_counter()
    hook.remove()
    return {"rollout_s": t1 - t0, "update_s": t2 - t1, "rollout_patches": rollout_patches,
            "update_patches": sum(patches) - rollout_patches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--size", type=int, default=112, help="frame side in pixels (a multiple of 28)")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per model turn")
    ap.add_argument("--vision-depth", type=int, default=4)
    ap.add_argument("--vision-hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        vlm, processor, enc, row = setup(args, Path(tmp))
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        measure(vlm, processor, enc, row, args)  # warm-up
        for _ in range(args.repeats):
            for dedupe in (False, True):
                vlm.dedupe_visual_inputs = dedupe
                runs[dedupe].append(measure(vlm, processor, enc, row, args))
    q = row.meta["stream"]["question_after"]
    table = Table(title=f"one streaming group: G={args.group} trajectories, {q} clips shown ({q - 1} in later turns) "
                        f"of {args.size}x{args.size}, {args.tokens} tokens per turn; vision {args.vision_depth}x"
                        f"{args.vision_hidden}, LM {args.layers}x{args.hidden}; median of {args.repeats}, "
                        f"{torch.get_num_threads()} threads")
    for col in ("vision inputs", "rollout s", "tower patches (rollout)", "scoring + backward s",
                "tower patches (update)"):
        table.add_column(col, justify="left" if col == "vision inputs" else "right")
    med = {d: {k: statistics.median(r[k] for r in runs[d]) for k in runs[d][0]} for d in runs}
    for dedupe, name in ((False, "encoded per trajectory (baseline)"), (True, "identical clips encoded once")):
        m = med[dedupe]
        table.add_row(name, f"{m['rollout_s']:.3f}", f"{m['rollout_patches']:.0f}", f"{m['update_s']:.3f}",
                      f"{m['update_patches']:.0f}")
    console = Console(width=160)
    console.print(table)
    console.print(f"speed-up: rollout {med[False]['rollout_s'] / med[True]['rollout_s']:.2f}x, scoring + backward "
                  f"{med[False]['update_s'] / med[True]['update_s']:.2f}x")


if __name__ == "__main__":
    main()
