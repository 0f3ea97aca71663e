"""The README's real-checkpoint commands, run as written on real-format checkpoints.

The bash blocks under "## Real checkpoints" are taken from README.md and run
in a fresh directory: ``reelrl tiny --family`` builds a real-format
Qwen2.5-VL / Qwen3-VL (published config, chat template and processor files,
the real Qwen vocabulary where ``tests/qwen_vocab.py`` can get it; 2 layers),
Video-R1-format JSON files stand in for COT-165k, 260k and an eval file
(written from the gym's rows and videos), and the import / train / eval
commands run with only these substitutions: the file names, the video root
and the model path; overrides appended to ``train`` and ``eval`` so that a run
fits a test: a few rows, one RL step, short generations, and fp32 compute
(this machine's CPU has no bf16 matrix units: a bf16 matmul runs on a
generic kernel, 80-150x slower than fp32, see benchmarks/real_width.py; the
recipe's bf16 with fp32 master weights is tested in tests/test_precision.py
and tests/test_real_format.py). ``--nproc 4`` stays: four processes share
this machine's cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.qwen_vocab import qwen_tokenizer_json

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "train": "model.dtype=float32 sft.max_rows=8 data.max_rows=4 rl.steps=1 rl.max_new_tokens=12 eval.max_new_tokens=12 eval.max_rows=4",
    "eval": "model.dtype=float32 eval.max_new_tokens=12 eval.max_rows=4",
}
MODEL = "/models/Qwen2.5-VL-7B-Instruct"


def readme_blocks(section: str = "## Real checkpoints") -> list[str]:
    """The ```bash blocks of one README section, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    return [b.replace("\\\n", " ") for b in re.findall(r"```bash\n(.*?)```", body, flags=re.S)]


def video_r1_rows(rows: list[dict], with_process: bool) -> list[dict]:
    """Gym rows in Video-R1's JSON layout (what its COT-165k / 260k / eval files hold)."""
    out = []
    for i, r in enumerate(rows):
        row = {"problem_id": i, "problem": r["question"], "data_type": "video", "problem_type": "multiple choice",
               "options": [f"{chr(65 + j)}. {o}" for j, o in enumerate(r["options"])],
               "solution": f"<answer>{r['answer']}</answer>", "path": "./" + r["video"]}
        if with_process:
            row["process"] = f"<think>{r['reasoning']}</think>"
        out.append(row)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_readme_real_checkpoint_commands(family, tiny_gym, tmp_path):
    blocks = readme_blocks()
    assert len(blocks) == 2, "README's real-checkpoint section: the commands block, then the reelrl tiny block"
    commands, build = blocks
    assert "--nproc 4" in commands and "data.test=data/eval.jsonl" in commands

    def load(split: str) -> list[dict]:
        return [json.loads(x) for x in (tiny_gym / f"{split}.jsonl").read_text().splitlines()]

    files = {"Video-R1-COT-165k.json": video_r1_rows(load("train"), True),
             "Video-R1-260k.json": video_r1_rows(load("train"), False),
             "eval_vsibench.json": video_r1_rows(load("test"), False)}
    for name, rows in files.items():
        assert name in commands
        (tmp_path / name).write_text(json.dumps(rows))
    (tmp_path / "data").mkdir()

    vocab = qwen_tokenizer_json()
    model_dir = f"models/{family}-2l"
    build = build.replace("models/qwen2_5_vl-2l", model_dir).replace("--family qwen2_5_vl", f"--family {family}")
    build = build.split("#")[0].strip() + (f" --tokenizer {vocab}" if vocab else "")
    script = commands.replace("VIDEO_ROOT", str(tiny_gym)).replace(MODEL, model_dir)
    lines = []
    for line in script.splitlines():
        verb = line.split()[1] if line.startswith("reelrl ") else None
        lines.append(f"{line} {SIZES[verb]}" if verb in SIZES else line)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join([build, *lines])], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    cfg = json.loads((tmp_path / model_dir / "config.json").read_text())
    assert cfg["model_type"] == family
    run = tmp_path / "runs" / "video_r1_7b-seed0"
    assert (run / "1-rl" / "model" / "config.json").is_file()
    sampling = json.loads((run / "1-rl" / "video_sampling.json").read_text())
    factor = 32 if family == "qwen3_vl" else 28
    assert (sampling["min_pixels"], sampling["max_pixels"], sampling["max_frames"]) == (100352, 100352, 16)
    assert sampling["min_pixels"] % factor**2 == 0
    evals = sorted((tmp_path / "runs").glob("eval-video_r1_7b-*"))
    assert len(evals) == 1, sorted(p.name for p in (tmp_path / "runs").iterdir())
    summary = json.loads((evals[0] / "summary.json").read_text())
    assert summary["rows"] == 4 or summary.get("split") == "test"
    assert not (tmp_path / "data" / "gym").exists() and not list(tmp_path.glob("**/tiny*"))
