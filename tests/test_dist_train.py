"""The trainer under torchrun: 2 gloo processes compute what 1 process computes.

Every run here is a real ``reelrl train`` (``python -m reelrl`` or
``torchrun -m reelrl``) in a subprocess, on the tiny model and gym of the
session fixtures.

Tolerance. At the same global batch the 2-process run differs from the
1-process run only in float summation order: gradients are summed over the
ranks instead of inside one backward, and SFT micro-batches group other rows.
Those differences are ~1e-7 relative. Adam would turn a rounding-level
gradient entry into a +-lr step (g / (|g| + eps) with eps = 1e-8), so the
recipes here use optimizer eps = 1e-3: then a weight moves by lr * g / (|g| +
1e-3) and a rounding difference of a gradient entry moves it by at most
~lr * 1e-7, far below the stated ``ATOL`` = 1e-6, while the weights do move by
much more than that (asserted). The sampled tokens of every group must be
identical (each group's sampling seed depends on its place in the step, and
decode / update batches are one prompt, so no batch composition differs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from reelrl.dist.env import find_free_port
from reelrl.train.durable import verify_manifest

pytestmark = pytest.mark.dist

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-6


def _recipe(recipe_dict: dict, tmp_path: Path, name: str, **changes) -> Path:
    cfg = json.loads(json.dumps(recipe_dict))
    cfg.update(threads=1, stages=["sft", "rl", "dpo", "eval"])
    cfg["logging"] = {"progress": False, "tensorboard": False}
    cfg["checkpoint"] = {"every": 1, "keep": 2}
    cfg["sft"] = {"epochs": 1, "batch_size": 4, "micro_batch_size": 2, "max_rows": 8,
                  "optim": {"lr": 1e-3, "eps": 1e-3, "schedule": "constant"}}
    cfg["rl"].update(steps=3, prompts_per_step=4, group_size=4, decode_batch=1, update_batch=1, log_samples_every=1,
                     temperature=1.0, optim={"lr": 1e-3, "eps": 1e-3, "schedule": "constant"})
    cfg["dpo"] = {"prompts": 4, "rollouts_per_prompt": 4, "max_new_tokens": 6, "epochs": 2, "batch_size": 2,
                  "self_correction_pairs": False, "optim": {"lr": 1e-3, "eps": 1e-3, "schedule": "constant"},
                  "verifier": {"accuracy_reward": "tests.rewards_for_tests:brevity", "correct_threshold": 0.7,
                               "require_format": False, "allow_truncated": True, "max_repetition": 1.0}}
    cfg["eval"] = {"max_new_tokens": 6, "max_rows": 6, "batch_size": 1}
    for key, value in changes.items():
        cfg[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(args: list[str], nproc: int | None = None, timeout: float = 600, extra_env: dict | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    if nproc is None:
        cmd = [sys.executable, "-m", "reelrl", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "reelrl", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _assert_close_weights(a_dir: Path, b_dir: Path, start: dict[str, torch.Tensor] | None = None) -> None:
    a, b = _weights(a_dir), _weights(b_dir)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= ATOL, f"{a_dir} vs {b_dir}: max |diff| {worst:.3g} > {ATOL}"
    if start is not None:
        moved = max(float((a[k].float() - start[k].float()).abs().max()) for k in a if k in start)
        assert moved > 100 * ATOL, f"the weights hardly moved ({moved:.3g}): the comparison would be vacuous"


def _samples(stage: Path) -> dict[tuple, list[str]]:
    rows = [json.loads(line) for line in (stage / "samples.jsonl").read_text().splitlines()]
    return {(r["step"], tuple(r["key"])): r["token_sha1"] for r in rows}


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory, tiny_gym, tiny_model_dir):
    """The same recipe (sft -> rl -> dpo -> eval) run by 1 process and by torchrun with 2 processes."""
    tmp = tmp_path_factory.mktemp("dist")
    base = {
        "name": "dist", "seed": 0, "model": {"path": str(tiny_model_dir)},
        "data": {"train": str(tiny_gym / "train.jsonl"), "test": str(tiny_gym / "test.jsonl")},
        "video": {"nframes": 16, "min_pixels": 3136, "max_pixels": 3136},
        "rl": {"max_new_tokens": 6, "beta": 0.0,
               "rewards": [{"name": "tests.rewards_for_tests:digit_fraction"}, {"name": "format", "weight": 0.5}]},
    }
    recipe = _recipe(base, tmp, "recipe")
    _run(["train", str(recipe), f"output_dir={tmp / 'one'}"])
    _run(["train", str(recipe), f"output_dir={tmp / 'two'}"], nproc=2)
    return tmp / "one", tmp / "two", tiny_model_dir, base, tmp


def test_sft_rl_dpo_eval_two_processes_equal_one(one_and_two):
    one, two, start_dir, _, _ = one_and_two
    start = _weights(start_dir)
    _assert_close_weights(one / "0-sft" / "model", two / "0-sft" / "model", start)
    a, b = _samples(one / "1-rl"), _samples(two / "1-rl")
    assert len(a) == 3 * 4 and a == b  # every group of every step: the same sampled tokens
    _assert_close_weights(one / "1-rl" / "model", two / "1-rl" / "model", _weights(one / "0-sft" / "model"))
    pairs_a = [json.loads(x) for x in (one / "2-dpo" / "pairs.jsonl").read_text().splitlines()]
    pairs_b = [json.loads(x) for x in (two / "2-dpo" / "pairs.jsonl").read_text().splitlines()]
    assert pairs_a and [{**p, "ref_logp": None} for p in pairs_a] == [{**p, "ref_logp": None} for p in pairs_b]
    for pa, pb in zip(pairs_a, pairs_b):  # the reference is the RL model: close across 1 and 2 processes
        assert pa["ref_logp"] == pytest.approx(pb["ref_logp"], abs=1e-4)
    _assert_close_weights(one / "2-dpo" / "model", two / "2-dpo" / "model", _weights(one / "1-rl" / "model"))
    ea, eb = (json.loads((d / "3-eval" / "eval.json").read_text()) for d in (one, two))
    assert ea == eb
    samples_a = (one / "3-eval" / "eval_samples.jsonl").read_text()
    assert samples_a == (two / "3-eval" / "eval_samples.jsonl").read_text()
    m1 = [json.loads(x) for x in (one / "1-rl" / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (two / "1-rl" / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(m1, m2):  # whole-step metrics, gathered over the ranks
        for key in ("reward/mean", "reward/group_std", "completion/length", "batch/groups"):
            assert x[key] == pytest.approx(y[key], abs=1e-6), key


def test_rank_zero_alone_writes(one_and_two):
    _, two, _, _, _ = one_and_two
    rl = two / "1-rl"
    assert len((rl / "metrics.jsonl").read_text().splitlines()) == 3  # one line per step, not one per rank
    assert sorted(p.name for p in rl.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2", "checkpoint-3"]
    assert sorted(p.name for p in (rl / "checkpoint-3").iterdir()) == [
        "manifest.json", "rng-0.pt", "rng-1.pt", "state", "trainer_state.pt"]
    listed = json.loads((rl / "checkpoint-3" / "manifest.json").read_text())["files"]
    assert {"rng-0.pt", "rng-1.pt", "trainer_state.pt", "state/.metadata"} <= set(listed)  # both ranks' files
    assert verify_manifest(rl / "checkpoint-3") is None
    assert (two / "summary.json").is_file()


def test_resume_two_processes_on_one_stays_within_tolerance(one_and_two):
    one, _, _, base, tmp = one_and_two
    recipe = _recipe(base, tmp, "rl_only", stages=["rl"], model={"path": str(one / "0-sft" / "model")})
    _run(["train", str(recipe), f"output_dir={tmp / 'full'}"])
    _run(["train", str(recipe), f"output_dir={tmp / 'part'}", "--stop-after", "2"], nproc=2)
    assert (tmp / "part" / "0-rl" / "checkpoint-2").is_dir() and not (tmp / "part" / "0-rl" / "model").exists()
    _run(["train", str(recipe), f"output_dir={tmp / 'part'}", "--resume"])  # 2 -> 1 processes
    _assert_close_weights(tmp / "full" / "0-rl" / "model", tmp / "part" / "0-rl" / "model")
    assert _samples(tmp / "full" / "0-rl") == _samples(tmp / "part" / "0-rl")


def test_resume_one_process_on_two_stays_within_tolerance(one_and_two):
    one, _, _, base, tmp = one_and_two
    recipe = _recipe(base, tmp, "rl_only", stages=["rl"], model={"path": str(one / "0-sft" / "model")})
    if not (tmp / "full" / "0-rl" / "model").is_dir():
        _run(["train", str(recipe), f"output_dir={tmp / 'full'}"])
    _run(["train", str(recipe), f"output_dir={tmp / 'grow'}", "--stop-after", "1"])
    assert (tmp / "grow" / "0-rl" / "checkpoint-1").is_dir() and not (tmp / "grow" / "0-rl" / "model").exists()
    _run(["train", str(recipe), f"output_dir={tmp / 'grow'}", "--resume"], nproc=2)  # 1 -> 2 processes
    _assert_close_weights(tmp / "full" / "0-rl" / "model", tmp / "grow" / "0-rl" / "model")
    assert _samples(tmp / "full" / "0-rl") == _samples(tmp / "grow" / "0-rl")


def test_sigkill_then_resume_is_bitwise_at_the_same_world_size(one_and_two):
    """Kill a 2-process run with SIGKILL once its first checkpoint exists, resume it with 2: the same weights."""
    one, two, _, base, tmp = one_and_two
    recipe = _recipe(base, tmp, "rl_kill", stages=["rl"], model={"path": str(one / "0-sft" / "model")})
    _run(["train", str(recipe), f"output_dir={tmp / 'ref2'}"], nproc=2)
    out = tmp / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "reelrl",
           "train", str(recipe), f"output_dir={out}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "0-rl" / "checkpoint-1").is_dir() and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, mid-step 2 (or mid-checkpoint)
    proc.wait()
    assert not (out / "0-rl" / "model").exists(), "the run finished before it could be killed"
    _run(["train", str(recipe), f"output_dir={out}", "--resume"], nproc=2)
    a, b = _weights(tmp / "ref2" / "0-rl" / "model"), _weights(out / "0-rl" / "model")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_nodes_on_localhost(one_and_two):
    """Two 'nodes' (one process each) joined by torchrun's c10d rendezvous on 127.0.0.1 finish a run."""
    one, _, _, base, tmp = one_and_two
    recipe = _recipe(base, tmp, "nodes", stages=["rl"], model={"path": str(one / "0-sft" / "model")})
    rl = dict(yaml.safe_load(recipe.read_text())["rl"], steps=1)
    recipe.write_text(yaml.safe_dump({**yaml.safe_load(recipe.read_text()), "rl": rl}))
    endpoint = f"127.0.0.1:{find_free_port()}"
    out = tmp / "nodes"
    procs = [
        subprocess.Popen([sys.executable, "-m", "reelrl", "train", str(recipe), f"output_dir={out}", "--nproc", "1",
                          "--nnodes", "2", "--node-rank", str(r), "--rdzv-endpoint", endpoint],
                         cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for r in (0, 1)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert (out / "0-rl" / "model" / "model.safetensors").is_file()
    assert len(_samples(out / "0-rl")) == 4


def test_a_config_error_names_the_rank_and_stops_every_process(tmp_path, recipe_dict):
    recipe = _recipe(recipe_dict, tmp_path, "bad", stages=["rl"])
    proc = _run(["train", str(recipe), "parallel.dp=3", f"output_dir={tmp_path / 'x'}"], nproc=2, check=False,
                timeout=300)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())  # rich wraps long lines
    assert "error (rank 0 of 2): parallel: dp (3) x sp (1) must equal the number of processes (2)" in text
    assert "error (rank 1 of 2):" in text
    assert "reelrl/" not in proc.stderr  # no traceback from reelrl's code (torchrun reports the failed workers)


def _rows_with_an_image(src: Path, out: Path) -> Path:
    """``src``'s rows, each with its video's first frame as an extra image before the video (PRIMO R1's
    initial-state image), written to ``out`` with absolute video paths."""
    from reelrl.data.schema import load_jsonl

    image = [{"role": "initial_state", "frame": 0, "position": "before"}]
    out.write_text("".join(json.dumps({**r.model_dump(), "video": str(Path(r.video).resolve()), "images": image})
                           + "\n" for r in load_jsonl(src)))
    return out


def _median_prompt_length(model_dir: Path, train: Path) -> int:
    from reelrl.data.prompts import PromptEncoder
    from reelrl.data.schema import load_jsonl
    from reelrl.models.load import load_model_and_processor
    from reelrl.video.sample import VideoSampling

    _, processor = load_model_and_processor(str(model_dir))
    enc = PromptEncoder(processor, VideoSampling(nframes=16, min_pixels=3136, max_pixels=3136),
                        "{question}\nThink inside <think></think>, then answer inside <answer></answer>.")
    lengths = sorted(enc.encode(r).length for r in load_jsonl(train))
    return lengths[len(lengths) // 2 - 1]


@pytest.mark.parametrize(("share_prefix", "images"), [(True, False), (False, True)])
def test_sequence_parallel_rl_equals_one_process(one_and_two, share_prefix, images):
    """sp=2 through the trainer: prompts above the threshold run MR-SP, the others as usual, in one step.

    The gym prompts here hold 87 to 96 tokens; with ``sp_threshold`` at their
    median some are long and some short. Rollout tokens must be identical; the
    losses and entropies the trainer logs (from the SP log-probs and logits) and
    the updated weights (from the SP gradients) equal the one-process run's.
    Both scoring paths: the SP prefill shared by the G completions
    (``share_prefix``) and the G full rows sequence-parallel, the latter over
    rows that show an extra image before their video (encoded whole on every
    rank, the video sharded).
    """
    one, _, _, base, tmp = one_and_two
    changes: dict = {"stages": ["rl"], "model": {"path": str(one / "0-sft" / "model")}}
    if images:
        train = _rows_with_an_image(Path(base["data"]["train"]), tmp / "train_images.jsonl")
        changes["data"] = {**base["data"], "train": str(train)}
    recipe = _recipe(base, tmp, f"sp-{share_prefix}", **changes)
    threshold = _median_prompt_length(one / "0-sft" / "model", Path(changes.get("data", base["data"])["train"]))
    a, b = tmp / f"sp1-{share_prefix}", tmp / f"sp2-{share_prefix}"
    _run(["train", str(recipe), f"output_dir={a}", f"rl.share_prefix={share_prefix}"])
    _run(["train", str(recipe), f"output_dir={b}", "parallel.sp=2", f"parallel.sp_threshold={threshold}",
          f"rl.share_prefix={share_prefix}"], nproc=2)
    assert _samples(a / "0-rl") == _samples(b / "0-rl")
    m1 = [json.loads(x) for x in (a / "0-rl" / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (b / "0-rl" / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(m1, m2):
        for key in ("loss/pg_loss", "loss/entropy", "loss/ratio_mean", "grad_norm", "reward/mean"):
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), key
    assert 0 < sum(m["sp/prefill"] for m in m2) < 3 * 4  # some rollouts ran sequence-parallel, not all
    assert sum(m["sp/encode"] for m in m2) > 0 and sum(m["sp/score"] for m in m2) > 0
    _assert_close_weights(a / "0-rl" / "model", b / "0-rl" / "model", _weights(one / "0-sft" / "model"))


def test_sequence_parallel_sft_equals_one_process(one_and_two):
    """sp=2 through the SFT trainer: examples whose prompt exceeds the threshold score their target with MR-SP."""
    one, _, start_dir, base, tmp = one_and_two
    recipe = _recipe(base, tmp, "sp_sft", stages=["sft"])
    _run(["train", str(recipe), f"output_dir={tmp / 'sp_sft'}", "parallel.sp=2", "parallel.sp_threshold=90"], nproc=2)
    m1 = [json.loads(x) for x in (one / "0-sft" / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (tmp / "sp_sft" / "0-sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(m1) == len(m2) == 2
    for x, y in zip(m1, m2):
        for key in ("sft/loss", "grad_norm", "sft/tokens"):
            assert x[key] == pytest.approx(y[key], rel=1e-5), key
    assert 0 < sum(m["sp/score"] for m in m2) < 8  # some of the 8 examples ran sequence-parallel, not all
    _assert_close_weights(one / "0-sft" / "model", tmp / "sp_sft" / "0-sft" / "model", _weights(start_dir))


def test_sequence_parallel_vlm_routes_only_long_prompts(tiny_model_dir, tiny_gym):
    """Which prompts the SP model treats as long (the prompt lengths this file's sp test relies on)."""
    from reelrl.data.prompts import PromptEncoder
    from reelrl.data.schema import load_jsonl
    from reelrl.dist.sp_model import SequenceParallelVLM
    from reelrl.models.load import load_model_and_processor
    from reelrl.video.sample import VideoSampling

    model, processor = load_model_and_processor(str(tiny_model_dir))
    enc = PromptEncoder(processor, VideoSampling(nframes=16, min_pixels=3136, max_pixels=3136),
                        "{question}\nThink inside <think></think>, then answer inside <answer></answer>.")
    lengths = [enc.encode(r).length for r in load_jsonl(tiny_gym / "train.jsonl")]
    vlm = SequenceParallelVLM(model, None, 90)
    assert min(lengths) <= 90 < max(lengths)  # both kinds in the gym
    assert [vlm.is_long(enc.encode(r)) for r in load_jsonl(tiny_gym / "train.jsonl")] == [n > 90 for n in lengths]


def test_fsdp_two_processes_equal_one(one_and_two):
    """parallel.fsdp=true (FSDP2 fully_shard per decoder layer / vision block, gloo): SFT then RL as one process."""
    one, _, start_dir, base, tmp = one_and_two
    recipe = _recipe(base, tmp, "fsdp", stages=["sft", "rl"])
    _run(["train", str(recipe), f"output_dir={tmp / 'fsdp2'}", "parallel.fsdp=true"], nproc=2)
    _assert_close_weights(one / "0-sft" / "model", tmp / "fsdp2" / "0-sft" / "model", _weights(start_dir))
    assert _samples(one / "1-rl") == _samples(tmp / "fsdp2" / "1-rl")
    _assert_close_weights(one / "1-rl" / "model", tmp / "fsdp2" / "1-rl" / "model", _weights(one / "0-sft" / "model"))
