"""Checkpoint faults: damaged checkpoints, a full disk, an unusable output_dir, SIGKILL at a random moment.

A damaged newest checkpoint (truncated file, flipped byte, missing manifest)
is set aside and the run resumes from the newest intact one, ending with
weights bitwise equal to an uninterrupted run; with none intact the CLI names
every checkpoint and its damage. A full disk while writing names the path
and the cause, removes the partial directory and leaves the previous
checkpoint intact and resumable.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.distributed.checkpoint import filesystem as dcp_fs
from typer.testing import CliRunner

from reelrl.cli import app
from reelrl.config import ConfigError, config_from_dict
from reelrl.pipeline import Pipeline
from reelrl.train.checkpoint import list_checkpoints
from reelrl.train.durable import MANIFEST, CheckpointError, explain_write_error, verify_manifest

ROOT = Path(__file__).resolve().parents[1]


def _weights(stage: Path) -> dict[str, torch.Tensor]:
    return load_file(str(stage / "model" / "model.safetensors"))


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _recipe(recipe_dict: dict, out: Path) -> dict:
    return dict(recipe_dict, output_dir=str(out), rl=dict(recipe_dict["rl"], steps=3))


def _truncate(ckpt: Path) -> str:
    f = next((ckpt / "state").glob("*.distcp"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return "truncated or partly written"


def _flip_byte(ckpt: Path) -> str:
    f = ckpt / "trainer_state.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    f.write_bytes(bytes(data))
    return "does not match its checksum"


def _no_manifest(ckpt: Path) -> str:
    (ckpt / MANIFEST).unlink()
    return "manifest.json is missing"


@pytest.fixture()
def interrupted(recipe_dict, tmp_path):
    """(weights of an uninterrupted 3-step run, a run stopped after step 2 with checkpoints 1 and 2, its recipe)."""
    full = _recipe(recipe_dict, tmp_path / "full")
    Pipeline(config_from_dict(full)).run()
    part = _recipe(recipe_dict, tmp_path / "part")
    assert Pipeline(config_from_dict(part)).run(stop_after=2) == {"interrupted": True, "stage": 0}
    stage = tmp_path / "part" / "0-rl"
    assert [p.name for p in list_checkpoints(stage)] == ["checkpoint-1", "checkpoint-2"]
    assert all(verify_manifest(p) is None for p in list_checkpoints(stage))
    return _weights(tmp_path / "full" / "0-rl"), tmp_path / "part", part


def test_a_damaged_newest_checkpoint_is_set_aside_and_resume_is_bitwise(interrupted, tmp_path, caplog):
    reference, part_dir, part = interrupted
    for damage in (_truncate, _flip_byte, _no_manifest):
        run = tmp_path / damage.__name__
        shutil.copytree(part_dir, run)
        why = damage(run / "0-rl" / "checkpoint-2")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="reelrl.train.checkpoint"):
            Pipeline(config_from_dict(dict(part, output_dir=str(run)))).run(resume=True)
        warning = caplog.text
        assert "checkpoint-2 is damaged" in warning and why in warning and "resuming from checkpoint-1" in warning
        assert (run / "0-rl" / "checkpoint-2.damaged").is_dir()  # kept for inspection
        _assert_equal(reference, _weights(run / "0-rl"))


def test_every_checkpoint_damaged_is_one_cli_message_naming_each(interrupted):
    _, part_dir, part = interrupted
    _truncate(part_dir / "0-rl" / "checkpoint-2")
    _flip_byte(part_dir / "0-rl" / "checkpoint-1")
    recipe = part_dir.parent / "part.yaml"
    recipe.write_text(yaml.safe_dump(part))
    result = CliRunner().invoke(app, ["train", str(recipe), "--resume"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "no intact checkpoint" in text and "Aborted" not in text
    assert "checkpoint-2: " in text and "truncated" in text
    assert "checkpoint-1: " in text and "checksum" in text


def test_an_unreadable_file_with_a_valid_manifest_names_the_file(interrupted, monkeypatch):
    """If a file passes its checksum but cannot be loaded (e.g. torch.load's EOFError), the error names it."""
    _, part_dir, part = interrupted
    real = torch.load

    def eof(path, *a, **kw):
        if isinstance(path, (str, os.PathLike)) and Path(path).name == "trainer_state.pt":
            raise EOFError("Ran out of input")
        return real(path, *a, **kw)

    monkeypatch.setattr(torch, "load", eof)
    with pytest.raises(CheckpointError, match=r"checkpoint-2/trainer_state\.pt: cannot be read \(EOFError"):
        Pipeline(config_from_dict(part)).run(resume=True)


@contextlib.contextmanager
def _dev_full(self, path, mode):
    """DCP's file streams, written to /dev/full: every write fails with the kernel's ENOSPC."""
    with open("/dev/full" if "w" in mode else path, mode) as f:
        yield f


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_names_the_path_keeps_the_previous_checkpoint_and_resumes(recipe_dict, tmp_path, monkeypatch):
    full = _recipe(recipe_dict, tmp_path / "full")
    Pipeline(config_from_dict(full)).run()
    part = _recipe(recipe_dict, tmp_path / "part")
    Pipeline(config_from_dict(part)).run(stop_after=1)
    stage = tmp_path / "part" / "0-rl"
    monkeypatch.setattr(dcp_fs.FileSystem, "create_stream", _dev_full)
    with pytest.raises(CheckpointError) as info:
        Pipeline(config_from_dict(part)).run(resume=True)
    msg = str(info.value)
    assert "writing checkpoint" in msg and str(stage / "checkpoint-2") in msg
    assert "no space left on the device" in msg and "checkpoint-1, is intact" in msg
    assert [p.name for p in stage.iterdir() if p.name.startswith("checkpoint")] == ["checkpoint-1"]  # no .tmp left
    assert verify_manifest(stage / "checkpoint-1") is None
    monkeypatch.undo()
    Pipeline(config_from_dict(part)).run(resume=True)
    _assert_equal(_weights(tmp_path / "full" / "0-rl"), _weights(stage))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_write_errors_say_disk_full_or_permission():
    real = torch.save
    with pytest.raises(RuntimeError, match="unexpected pos") as info:  # what torch.save raises on a full disk
        real({"x": torch.zeros(100_000)}, "/dev/full")
    msg = explain_write_error(info.value, Path("/run/x/rng-0.pt"))
    assert msg.startswith("/run/x/rng-0.pt: the write stopped short") and "disk is probably full" in msg
    e = PermissionError(errno.EACCES, "Permission denied", "/data/run/0-rl/checkpoint-3.tmp")
    assert explain_write_error(e, Path("/data/run")) == (
        "/data/run/0-rl/checkpoint-3.tmp: permission denied (check the owner and mode of the directory)")
    e = OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run")
    assert explain_write_error(e, Path("/mnt/ro/run")) == "/mnt/ro/run: the filesystem is read-only"


def test_an_output_dir_that_is_a_file_or_unwritable_is_a_clear_error(recipe_dict, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=rf"output_dir: {blocker} is a file, not a directory"):
        Pipeline(config_from_dict(dict(recipe_dict, output_dir=str(blocker / "runs")))).run()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(dict(recipe_dict, output_dir="/sys/reelrl-cannot-write-here")))
    result = CliRunner().invoke(app, ["train", str(recipe)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "output_dir: cannot write the run directory: /sys/reelrl-cannot-write-here" in text
    assert "Traceback" not in text and "Aborted" not in text


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # bitwise equality holds at one thread count: CPU kernels
# split their reductions by the number of threads, so runs with 1 and 2 threads differ in the last bits


def _train(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``reelrl train RECIPE output_dir=OUT`` in its own process (and session), on one CPU thread.

    Its output goes to ``OUT.log`` beside the run (a pipe could fill and block it)."""
    log = out.parent / f"{out.name}{'-'.join(('', *extra))}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "reelrl", "train", str(recipe), f"output_dir={out}", *extra],
                                cwd=ROOT, env=ONE_THREAD, start_new_session=True, stdout=f, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _finish(proc: subprocess.Popen) -> None:
    """Wait for a ``_train`` process; a failure shows the end of its log."""
    if proc.wait() != 0:
        raise AssertionError(proc.log.read_text()[-3000:])


def _kill_at_random_moment(recipe: Path, out: Path, delay: float) -> None:
    """Start ``reelrl train`` in its own process, SIGKILL it ``delay`` s after its first checkpoint exists."""
    proc = _train(recipe, out)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "0-rl" / "checkpoint-1").is_dir() and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _resume_after_sigkill(recipe_dict, tmp_path, seeds: list[int]) -> None:
    """The reference, the killed run and its resume all run as ``reelrl train`` processes on one thread."""
    rl = dict(recipe_dict["rl"], steps=12)  # about 0.2 s a step on 2 cores
    recipe = tmp_path / "kill.yaml"
    recipe.write_text(yaml.safe_dump(dict(recipe_dict, output_dir=str(tmp_path / "unused"), rl=rl)))
    _finish(_train(recipe, tmp_path / "ref"))
    start = load_file(str(Path(recipe_dict["model"]["path"]) / "model.safetensors"))
    assert any(not torch.equal(v, start[k]) for k, v in _weights(tmp_path / "ref" / "0-rl").items())
    for seed in seeds:
        out = tmp_path / f"killed-{seed}"
        _kill_at_random_moment(recipe, out, random.Random(seed).uniform(0.0, 1.0))  # mid-step or mid-checkpoint
        assert not (out / "0-rl" / "done.json").exists(), "the run finished before it could be killed"
        _finish(_train(recipe, out, "--resume"))
        _assert_equal(_weights(tmp_path / "ref" / "0-rl"), _weights(out / "0-rl"))


def test_sigkill_at_a_random_moment_then_resume_is_bitwise(recipe_dict, tmp_path):
    _resume_after_sigkill(recipe_dict, tmp_path, seeds=[0])


@pytest.mark.slow
def test_sigkill_at_many_random_moments_then_resume_is_bitwise(recipe_dict, tmp_path):
    _resume_after_sigkill(recipe_dict, tmp_path, seeds=list(range(1, 9)))
