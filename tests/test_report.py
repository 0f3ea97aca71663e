"""reelrl report: run pages and comparisons made from real (short) trainer runs, checked in headless Chromium.

The runs answer by rote (tests/report_engine_for_tests.py): completion i of every group answers the i-th
letter of ABCD, so each group of 4 on a 4-option row has exactly one right completion, and an evaluation
(one greedy completion) answers A. The counts the filters must show follow from that and from the rows.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reelrl.cli import app
from reelrl.config import config_from_dict
from reelrl.data.schema import load_jsonl
from reelrl.pipeline import Pipeline
from reelrl.report import ReportError, load_run, write_comparison, write_report
from reelrl.report.data import is_correct
from reelrl.video.decode import load_video
from reelrl.video.sample import VideoSampling

GROUP = 4
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _recipe(tiny_gym: Path, tiny_model_dir: Path, out: Path, stages: list[str], letters: str, steps: int) -> dict:
    return {
        "name": "report-test", "seed": 0, "output_dir": str(out), "stages": stages,
        "model": {"path": str(tiny_model_dir)},
        "data": {"train": str(tiny_gym / "train.jsonl"), "test": str(tiny_gym / "test.jsonl")},
        "video": {"nframes": 16, "min_pixels": 3136, "max_pixels": 3136},
        "sft": {"epochs": 1, "batch_size": 4, "micro_batch_size": 4, "optim": {"lr": 1e-3}},
        "rl": {"steps": steps, "prompts_per_step": 2, "group_size": GROUP, "max_new_tokens": 12, "beta": 0.04,
               "log_samples_every": 2, "rewards": [{"name": "accuracy"}, {"name": "format", "weight": 0.5}],
               "optim": {"lr": 1e-3, "schedule": "constant"}},
        "rollout": {"engine": "tests.report_engine_for_tests:RoteEngine",
                    "engine_kwargs": {"tokenizer": str(tiny_model_dir), "letters": letters}},
        "eval": {"max_new_tokens": 12, "max_rows": 6},
        "logging": {"progress": False, "tensorboard": False},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_gym, tiny_model_dir) -> dict[str, Path]:
    """``main``: sft -> eval -> rl (3 steps, groups logged at steps 0 and 2) -> eval; ``other``: rl (2 steps) ->
    eval answering D throughout."""
    root = tmp_path_factory.mktemp("report-runs")
    Pipeline(config_from_dict(_recipe(tiny_gym, tiny_model_dir, root / "main", ["sft", "eval", "rl", "eval"],
                                      "ABCD", 3))).run()
    Pipeline(config_from_dict(_recipe(tiny_gym, tiny_model_dir, root / "other", ["rl", "eval"], "D", 2))).run()
    return {"main": root / "main", "other": root / "other", "gym": tiny_gym}


# ------------------------------------------------------------- what the trainer logs for the report
def test_sampled_groups_are_logged_every_n_steps_with_what_the_browser_shows(runs):
    recs = [json.loads(line) for line in (runs["main"] / "2-rl" / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [0, 0, 2, 2]  # every 2 steps of 3, 2 groups each
    rows = {r.id: r for r in load_jsonl(runs["gym"] / "train.jsonl")}
    for r in recs:
        row = rows[r["row"]]
        assert (r["task"], r["answer"], r["video"], r["question"]) == (row.task, row.answer, row.video,
                                                                       row.prompt_text())
        assert Path(r["video"]).is_file()
        assert r["completions"] == [f"<answer>{x}</answer>" for x in "ABCD"]
        assert r["columns"]["accuracy"] == [float(x == row.answer) for x in "ABCD"]
        assert r["rewards"] == r["columns"]["accuracy"]  # format (0.5) needs <think>: 0 for every completion
        adv = np.array(r["advantages"])
        assert abs(adv.sum()) < 1e-5 and adv[r["rewards"].index(1.0)] > 0 > adv.min()  # GRPO: right one up
    metrics = [json.loads(line) for line in (runs["main"] / "2-rl" / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:  # one right of 4 in every group: every task's training accuracy is 1/4
        tasks = {k: v for k, v in m.items() if k.startswith("task/")}
        assert tasks and all(v == 0.25 for v in tasks.values()), tasks


def test_the_run_reads_back_stage_by_stage(runs):
    run = load_run(runs["main"])
    assert [(s.name, s.label, s.done) for s in run.stages] == [
        ("0-sft", "SFT", True), ("1-eval", "SFT", True), ("2-rl", "SFT+GRPO", True), ("3-eval", "SFT+GRPO", True)]
    assert [len(s.metrics) for s in run.training()] == [2, 3]
    ev = run.stages[1].evals[0]
    gold = [r.answer for r in load_jsonl(runs["gym"] / "test.jsonl")[:6]]
    assert [s["completion"] for s in ev.samples] == ["<answer>A</answer>"] * 6
    assert ev.summary["accuracy"] == pytest.approx(gold.count("A") / 6)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "missing: no such run directory"),
    (lambda d: (d / "file.txt").write_text("x") and d / "file.txt", "file.txt: not a run directory (a file)"),
    (lambda d: d, "not a run directory (no config.yaml"),
    (lambda d: (d / "config.yaml").write_text("name: x\n") and d, "no stage folders"),
])
def test_bad_input_is_an_error_naming_the_path(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ReportError, match=re.escape(message)) as e:
        write_report(path)
    assert str(path) in str(e.value)
    res = CliRunner().invoke(app, ["report", str(path)])
    assert res.exit_code == 2 and message in " ".join(res.output.split())


def test_a_malformed_metrics_line_names_file_and_line(runs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(runs["main"], bad, ignore=shutil.ignore_patterns("model", "checkpoint-*"))
    lines = (bad / "2-rl" / "metrics.jsonl").read_text().splitlines()
    (bad / "2-rl" / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(ReportError, match=r"2-rl/metrics.jsonl:2: not JSON"):
        write_report(bad)


def test_a_run_still_training_is_reported_as_far_as_it_got(runs, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(runs["main"], live, ignore=shutil.ignore_patterns("model", "checkpoint-*", "3-eval"))
    (live / "2-rl" / "done.json").unlink()
    (live / "summary.json").unlink()
    with (live / "2-rl" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "reward/me')  # the line being written right now
    run = load_run(live)
    assert [(s.name, s.done) for s in run.stages] == [("0-sft", True), ("1-eval", True), ("2-rl", False)]
    assert [m["step"] for m in run.stages[2].metrics] == [1, 2, 3]
    html = write_report(live).read_text()
    assert "2-rl: 3 steps (not finished)" in html
    assert html.count('<table class="metrics eval">') == 1 and "<th>SFT</th>" in html and "SFT+GRPO</th>" not in html


def test_eval_levels_get_a_column_and_a_source_each(runs, tmp_path):
    lv = tmp_path / "levels"
    shutil.copytree(runs["main"], lv, ignore=shutil.ignore_patterns("model", "checkpoint-*"))
    files = [p for p in (lv / "3-eval").iterdir() if p.is_file() and p.name != "done.json"]
    for level in ("L1", "L2"):  # an eval.levels stage: one folder of eval files per level
        (lv / "3-eval" / level).mkdir()
        for p in files:
            shutil.copy(p, lv / "3-eval" / level / p.name)
    for p in files:
        p.unlink()
    html = write_report(lv).read_text()
    assert "<th>SFT</th><th>SFT+GRPO [L1]</th><th>SFT+GRPO [L2]</th>" in html
    assert html.count('data-source="3-eval/L1"') == html.count('data-source="3-eval/L2"') == 6


# ------------------------------------------------------------------------------ the file itself
def test_the_page_is_self_contained_and_shows_the_frames_the_model_saw(runs, tmp_path):
    out = write_report(runs["main"], tmp_path / "r.html")
    html = out.read_text()
    for fetch in ("<link", "<script src", "src=\"http", "href=\"http", "@import", "url(http"):
        assert fetch not in html, fetch
    uris = [part.split('"', 1)[0] for part in html.split('<img class="frames" src="')[1:]]
    assert len(uris) == 4 + 2 * 6 and all(u.startswith("data:image/jpeg;base64,") for u in uris)
    # the first card is step 0's first group: its strip is the 16 sampled frames of its video, side by side
    rec = json.loads((runs["main"] / "2-rl" / "samples.jsonl").read_text().splitlines()[0])
    sampling = VideoSampling(**json.loads((runs["main"] / "2-rl" / "video_sampling.json").read_text()))
    frames = load_video(rec["video"], sampling).frames  # [16, 56, 56, 3]
    strip = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[0].split(",", 1)[1]))).convert("RGB"))
    assert strip.shape == (56, 16 * 58 - 2, 3)
    tiles = np.stack([strip[:, j * 58: j * 58 + 56] for j in range(16)]).astype(float)  # [16, 56, 56, 3]
    err = np.abs(tiles - frames).mean()
    assert err < 3  # JPEG at quality 80
    other = json.loads((runs["main"] / "1-eval" / "eval_samples.jsonl").read_text().splitlines()[0])["video"]
    assert other != rec["video"]
    assert np.abs(tiles - load_video(other, sampling).frames).mean() > 2 * err  # another video's frames differ


# ---------------------------------------------------------------------------- in a real browser
def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium): the report's browser tests drive "
                    "it headless with Playwright")
    return path


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: pip install "
                                   "-e '.[test]'")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, path: Path):
    """A page loaded from ``path`` with every console error and every non-file request recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.errors, page.requests = [], []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page


def _visible_rows(page) -> int:
    return page.evaluate("[...document.querySelectorAll('tr.completion')].filter(t => t.offsetParent).length")


def test_the_run_page_renders_and_filters_in_chromium(runs, browser, tmp_path):
    out = write_report(runs["main"], tmp_path / "report.html")
    page = _open(browser, out)
    assert page.errors == [] and page.requests == []
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")  # the other metrics too
    charts = page.locator("svg.chart")
    assert charts.count() >= 12  # SFT: loss, grad norm, time; RL: reward ... time; the time split
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        assert box["width"] > 100 and box["height"] > 100
    assert page.locator("svg.chart polyline").count() > 10
    widths = page.evaluate("[...document.querySelectorAll('img.frames')].map(i => i.naturalWidth)")
    assert len(widths) == 16 and all(w == 16 * 58 - 2 for w in widths)  # every strip decoded
    headers = page.locator("table.eval thead th").all_inner_texts()
    assert headers == ["metric", "SFT", "SFT+GRPO", "last - first"]

    evals = [json.loads(line) for d in ("1-eval", "3-eval")
             for line in (runs["main"] / d / "eval_samples.jsonl").read_text().splitlines()]
    total = 4 * GROUP + len(evals)
    assert _visible_rows(page) == total == 28
    assert page.inner_text("#f-count") == f"16 prompts, {total} completions shown"

    page.select_option("#f-source", "2-rl")  # the 4 logged groups, 4 completions each
    assert _visible_rows(page) == 16 and page.inner_text("#f-count") == "4 prompts, 16 completions shown"
    page.select_option("#f-correct", "1")  # one right completion per group
    assert _visible_rows(page) == 4 and page.inner_text("#f-count") == "4 prompts, 4 completions shown"
    page.select_option("#f-correct", "0")
    assert _visible_rows(page) == 12
    page.select_option("#f-source", "all")
    page.select_option("#f-correct", "1")
    right_evals = sum(bool(is_correct(e["accuracy"])) for e in evals)
    assert right_evals == 2 * [r.answer for r in load_jsonl(runs["gym"] / "test.jsonl")[:6]].count("A")
    assert _visible_rows(page) == 4 + right_evals
    task = evals[0]["task"]
    page.select_option("#f-correct", "all")
    page.select_option("#f-task", task)
    groups = [json.loads(line) for line in (runs["main"] / "2-rl" / "samples.jsonl").read_text().splitlines()]
    want = GROUP * sum(g["task"] == task for g in groups) + sum(e["task"] == task for e in evals)
    assert _visible_rows(page) == want
    page.close()


def test_the_comparison_tables_final_evals_and_overlays_curves_in_chromium(runs, browser, tmp_path):
    out = write_comparison([runs["main"], runs["other"]], tmp_path / "cmp.html")
    page = _open(browser, out)
    assert page.errors == [] and page.requests == []
    rows = page.locator("table.compare tbody tr")
    assert rows.count() == 2
    finals = [json.loads((runs[k] / d / "eval.json").read_text())["accuracy"]
              for k, d in (("main", "3-eval"), ("other", "1-eval"))]
    assert finals[0] != finals[1]  # A vs D answers on the same rows
    for i, (label, acc) in enumerate(zip(["main", "other"], finals)):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[0] == label and cells[4] == f"{acc:.3f}"
    charts = page.locator("svg.chart")
    assert charts.count() >= 5
    for i in range(charts.count()):
        assert charts.nth(i).locator("polyline").count() == 2  # one line per run
        box = charts.nth(i).bounding_box()
        assert box["width"] > 100 and box["height"] > 100
    page.close()


def test_report_cli_writes_the_run_page_and_a_comparison(runs, tmp_path):
    res = CliRunner().invoke(app, ["report", str(runs["other"]), "--out", str(tmp_path / "one.html")])
    assert res.exit_code == 0, res.output
    assert 'data-source="0-rl"' in (tmp_path / "one.html").read_text()
    res = CliRunner().invoke(app, ["report", str(runs["main"]), str(runs["other"]), "--out", str(tmp_path / "c.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c.html").read_text().count("<tr><td>") == 2
