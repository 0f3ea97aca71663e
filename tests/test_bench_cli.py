"""`reelrl eval --bench` end to end on the tiny model: output files, and an interrupted run resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from reelrl.cli import app
from tests.bench_roots import bench_root


def test_bench_cli_writes_results_and_resumes(recipe_dict, tiny_model_dir, tmp_path) -> None:
    root = bench_root("mvbench", tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**recipe_dict, "stages": ["eval"]}))
    out = tmp_path / "out"
    args = ["eval", str(recipe), "--bench", "mvbench", "--root", str(root), "--model", str(tiny_model_dir),
            "--out", str(out), "logging.progress=false", "eval.batch_size=2"]
    runner = CliRunner()
    res = runner.invoke(app, [*args, "--limit", "3"])
    assert res.exit_code == 0, res.output
    first = json.loads((out / "summary.json").read_text())
    assert (first["n"], first["n_rows"], first["n_total"], first["complete"]) == (3, 3, 5, False)
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["action_sequence-0", "action_sequence-1", "moving_count-0"]
    # an interruption mid-write: a torn last line is dropped, its sample decoded again
    (out / "samples.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in recs]
    assert ids == ["action_sequence-0", "action_sequence-1", "moving_count-0", "moving_count-1", "moving_count-2"]
    assert recs[:2] == [json.loads(x) for x in lines[:2]]  # kept, not decoded again
    assert (summary["n"], summary["n_total"], summary["complete"], summary["skipped"]) == (5, 5, True, {})
    for rec in recs:
        assert set(rec) == {"id", "answer", "completion", "length", "fields", "strict", "benchmark"}
        assert set(rec["benchmark"]) >= {"pred", "score"} and rec["fields"]["task"] == rec["id"].rsplit("-", 1)[0]
    b = summary["scores"]["benchmark"]
    assert b["Avg"] == sum(r["benchmark"]["score"] for r in recs) / 5
    assert b["task"]["moving_count"]["n"] == 3 and summary["scores"]["strict"]["task"]["action_sequence"]["n"] == 2
    assert json.loads((out / "run.json").read_text())["prompt"] == "official"
    assert not list(out.glob("samples.rank*.jsonl"))
    # other settings into the same directory are refused, not mixed
    res = runner.invoke(app, [*args, "--prompt", "recipe"])
    assert res.exit_code == 2 and "holds samples of another benchmark run" in " ".join(res.output.split())


def test_bench_cli_errors_name_what_is_wrong(tiny_model_dir, tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--bench", "nope", "--root", str(tmp_path), "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "valid names: clevrer" in res.output
    root = bench_root("videomme", tmp_path, videos=False)
    res = runner.invoke(app, ["eval", "--bench", "videomme", "--root", str(root), "--model", str(tiny_model_dir),
                              "--out", str(tmp_path / "o")])
    text = "".join(res.output.split())  # rich wraps long paths mid-word
    assert res.exit_code == 2 and "(question_id001-1):videofilenotfound" in text, res.output
    assert "test-00000-of-00001.parquetrow0" in text and "data/fFjv93ACGo8.mp4" in text


@pytest.mark.dist
def test_bench_two_processes_shard_and_merge_to_the_one_process_result(recipe_dict, tiny_model_dir, tmp_path) -> None:
    """`--nproc 2`: each rank decodes its share (samples.rank*.jsonl while running), the merge equals one process."""
    root = bench_root("mvbench", tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**recipe_dict, "stages": ["eval"], "threads": 1}))
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        cmd = [sys.executable, "-m", "reelrl", "eval", str(recipe), "--bench", "mvbench", "--root", str(root),
               "--model", str(tiny_model_dir), "--out", str(out), "logging.progress=false", "eval.batch_size=1"]
        if nproc > 1:
            cmd += ["--nproc", str(nproc)]
        proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
        runs[nproc] = (recs, json.loads((out / "summary.json").read_text()))
        assert not list(out.glob("samples.rank*.jsonl"))  # merged and removed
    (one, s1), (two, s2) = runs[1], runs[2]
    assert [r["id"] for r in two] == [r["id"] for r in one] and len(one) == 5
    assert [r["completion"] for r in two] == [r["completion"] for r in one]  # greedy, batch 1: the same text
    assert s2["scores"] == s1["scores"] and s2["n"] == 5
