"""The ``reelrl`` command line: train | sft | eval | gym | tiny | import-video-r1 | import-charades-sta |
import-seed-bench-r1 | import-hc-stvg | draw-ids | serve | online-rl | report.

Recipes are YAML files; any field can be overridden as ``key.sub=value``::

    reelrl train recipes/quickstart.yaml rl.steps=50 seed=1
    reelrl train quickstart --nproc 2            # starts torchrun with 2 processes
    torchrun --nproc-per-node 8 -m reelrl train RECIPE parallel.fsdp=true
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from reelrl.config import ConfigError, RecipeConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()


def _fail(msg: str) -> None:
    """Print the message (naming the rank in a distributed run) and exit 2."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    where = f" (rank {os.environ.get('RANK', '?')} of {world})" if world > 1 else ""
    console.print(f"[bold red]error{where}:[/] {msg}")
    raise typer.Exit(2)


def _load(recipe: str | Path, overrides: list[str] | None, fill: dict | None = None) -> RecipeConfig:
    from reelrl.pipeline import load_recipe

    try:
        return load_recipe(recipe, overrides or [], fill)
    except ConfigError as e:
        _fail(str(e))
        raise  # unreachable


@contextmanager
def _user_errors(where: Path):
    """Bad input, a failed write or a non-finite run becomes an ``error:`` message and exit 2, not a traceback.

    ``where``: the path an OSError without a file name is reported for.
    """
    from reelrl.data.schema import DataError
    from reelrl.train.durable import CheckpointError, explain_write_error
    from reelrl.video.decode import VideoError

    try:
        yield
    except (DataError, VideoError, ConfigError, CheckpointError, FileExistsError, FileNotFoundError,
            FloatingPointError) as e:
        _fail(str(e))
    except OSError as e:  # a write the stage's own checks did not foresee: say where and why
        _fail(explain_write_error(e, Path(e.filename or where)))
    except EOFError as e:  # typer would print only "Aborted."
        _fail(f"unexpected end of a file ({e or 'EOFError'}); a truncated file was read")


def _run(cfg: RecipeConfig, resume: bool, stop_after: int | None, model: str | None = None,
         label: str = "base") -> dict:
    from reelrl.pipeline import Pipeline

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _user_errors(cfg.run_dir()):
            return Pipeline(cfg, model_path=model, label=label).run(resume=resume, stop_after=stop_after)
    except typer.Exit:  # the message is printed
        raise
    except Exception as e:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # say which process failed; the traceback follows
            print(f"error (rank {os.environ.get('RANK', '?')}): {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise


def _torchrun(nproc: int, nnodes: int, node_rank: int, rdzv_endpoint: str | None) -> None:
    """Re-run this command under torchrun (``--nproc`` and friends removed); exits with its status."""
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint"):
            skip = "=" not in a
            continue
        argv.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if nnodes > 1:
        if not rdzv_endpoint:
            _fail("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every node)")
        cmd += [f"--node-rank={node_rank}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    else:
        cmd += ["--standalone"]
    raise typer.Exit(subprocess.call([*cmd, "-m", "reelrl", *argv]))


OVERRIDES = typer.Argument(None, help="Dotted overrides, e.g. rl.steps=10 seed=1")
NPROC = typer.Option(None, "--nproc", help="Start this many processes on this node with torchrun (data parallel).")
NNODES = typer.Option(1, "--nnodes", help="With --nproc: number of nodes (torchrun c10d rendezvous).")
NODE_RANK = typer.Option(0, "--node-rank", help="With --nnodes > 1: this node's rank.")
RDZV = typer.Option(None, "--rdzv-endpoint", help="With --nnodes > 1: HOST:PORT of the rendezvous (node 0).")
RESUME = typer.Option(False, "--resume", help="Continue the run in output_dir from its last checkpoint.")
STOP = typer.Option(None, "--stop-after", help="Stop after N more optimizer steps (the run stays resumable).")


@app.command()
def train(recipe: str = typer.Argument("quickstart", help="Recipe file or packaged recipe name."),
          overrides: Optional[list[str]] = OVERRIDES, resume: bool = RESUME,
          stop_after: Optional[int] = STOP, nproc: Optional[int] = NPROC, nnodes: int = NNODES,
          node_rank: int = NODE_RANK, rdzv_endpoint: Optional[str] = RDZV) -> None:
    """Run the recipe's stages (e.g. sft -> eval -> rl -> eval) and print the summary table."""
    if "=" in recipe:  # `reelrl train rl.steps=5`: overrides of the default recipe
        overrides, recipe = [recipe, *(overrides or [])], "quickstart"
    cfg = _load(recipe, overrides)
    if nproc is not None:
        _torchrun(nproc, nnodes, node_rank, rdzv_endpoint)
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"[bold]reelrl[/] {cfg.name}: stages {' -> '.join(cfg.stages)}; run dir {cfg.run_dir()}")
    _run(cfg, resume, stop_after)


@app.command()
def sft(recipe: str, overrides: Optional[list[str]] = OVERRIDES, resume: bool = RESUME,
        stop_after: Optional[int] = STOP) -> None:
    """Only the CoT-SFT stage of a recipe."""
    cfg = _load(recipe, overrides)
    cfg.stages = ["sft"]
    _run(cfg, resume, stop_after)


def model_label(model: str | Path) -> str:
    """How results name a model directory: ``RUN/STAGE`` for a reelrl stage model, else the directory name."""
    p = Path(model).expanduser()
    if p.name == "model" and p.parent.name:
        return f"{p.parent.parent.name}/{p.parent.name}" if p.parent.parent.name else p.parent.name
    return p.name or str(p)


def eval_dir(cfg: RecipeConfig, label: str, out: Path | None, overwrite: bool) -> Path:
    """Where ``reelrl eval`` writes: ``out``, or ``<runs>/eval-<recipe>-<model label>``; never a training run."""
    run = out if out is not None else cfg.run_dir().parent / f"eval-{cfg.name}-{label.replace('/', '-')}"
    saved = run / "config.yaml"
    if saved.is_file() and not overwrite:
        import yaml

        stages = (yaml.safe_load(saved.read_text()) or {}).get("stages")
        if stages != ["eval"]:
            _fail(f"{run} holds a run with stages {stages}, not an evaluation: reelrl eval does not write into it "
                  "(pass --out DIR, or --overwrite to write there anyway)")
    return run


@app.command("eval")
def eval_(recipe: Optional[str] = typer.Argument(None, help="Recipe file or packaged name (with --bench: "
                                                 "default 'bench')."),
          overrides: Optional[list[str]] = OVERRIDES,
          model: Optional[str] = typer.Option(None, help="Model directory (default: the recipe's model.path)."),
          out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default: "
                                             "<runs>/eval-<recipe>-<model>, or <runs>/bench-<bench>-<model>)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Write into --out even if a training run "
                                         "created it (with --bench: discard samples made with other settings)."),
          bench: Optional[str] = typer.Option(None, "--bench", help="A public benchmark instead of the recipe's "
                                              "eval split: videomme | mvbench | vsibench | longvideobench | mmvu | "
                                              "clevrer | video_holmes."),
          root: Optional[Path] = typer.Option(None, "--root", help="With --bench: the benchmark's files as "
                                              "distributed (annotations and videos)."),
          annotations: Optional[Path] = typer.Option(None, "--annotations", help="With --bench: this annotation "
                                                     "file instead of the published default under --root."),
          prompt: str = typer.Option("official", "--prompt", help="With --bench: official (the benchmark's own "
                                     "prompt) or recipe (the recipe's prompt template, as in training)."),
          limit: Optional[int] = typer.Option(None, "--limit", min=1, help="With --bench: only the first N "
                                              "samples (a rerun without it continues with the rest)."),
          nproc: Optional[int] = NPROC) -> None:
    """Greedy evaluation of a model on the recipe's eval split, or on a public benchmark (``--bench``).

    Results are labelled by the model (``RUN/STAGE`` for a reelrl stage
    model); the frames are sampled for that model's processor (its patch
    factors, qwen-vl-utils' pixel defaults for them) unless the recipe or the
    command line sets them. Nothing unused is built: with ``--model`` the
    recipe's tiny checkpoint is not. With ``--bench`` a rerun into the same
    directory continues where the last one stopped.
    """
    if recipe is not None and "=" in recipe:  # `reelrl eval --bench x eval.max_new_tokens=16`: overrides only
        overrides, recipe = [recipe, *(overrides or [])], None
    if bench is not None:
        if nproc is not None:
            _torchrun(nproc, 1, 0, None)
        _bench(recipe or "bench", overrides, model, bench, root, annotations, prompt, limit, out, overwrite)
        return
    if recipe is None:
        _fail("reelrl eval needs a recipe (or --bench NAME --root DIR)")
    cfg = _load(recipe, [*(overrides or []), "stages=[eval]"], {"model.path": model} if model else None)
    label = model_label(model or cfg.model.path)
    cfg.output_dir = str(eval_dir(cfg, label, out, overwrite))
    if (cfg.run_dir() / "0-eval" / "done.json").exists():
        import shutil

        shutil.rmtree(cfg.run_dir() / "0-eval")
    console.print(f"[bold]reelrl[/] eval of {label} on {cfg.eval.split}; results in {cfg.run_dir()}")
    _run(cfg, False, None, model, label)


def _bench(recipe: str, overrides: list[str] | None, model: str | None, bench: str, root: Path | None,
           annotations: Path | None, prompt: str, limit: int | None, out: Path | None, overwrite: bool) -> None:
    """``reelrl eval --bench``: one benchmark (reelrl.eval.bench), resumable, summary printed."""
    from reelrl.eval.bench import BENCHMARKS
    from reelrl.pipeline import Pipeline

    try:
        BENCHMARKS.get(bench)
    except KeyError as e:
        _fail(str(e.args[0]))
    if root is None:
        _fail("--bench needs --root DIR: the benchmark's files as distributed")
    if not root.is_dir():
        _fail(f"--root {root}: not a directory")
    fill = {"data.test": str(root), **({"model.path": model} if model else {})}
    cfg = _load(recipe, [*(overrides or []), "stages=[eval]"], fill)
    label = model_label(model or cfg.model.path)
    out = out if out is not None else cfg.run_dir().parent / f"bench-{bench}-{label.replace('/', '-')}"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with _user_errors(out):
        pipe = Pipeline(cfg, model_path=model, label=label)
        if pipe.dims.is_main:
            console.print(f"[bold]reelrl[/] {bench} with {label} ({prompt} prompt); results in {out}")
        summary = pipe.benchmark(bench, root, out, prompt=prompt, annotations=annotations, limit=limit,
                                 overwrite=overwrite)
    if pipe.dims.is_main:
        print_bench(summary)


def print_bench(summary: dict) -> None:
    """The headline numbers of a benchmark summary, strict and benchmark extraction side by side."""
    from rich.table import Table

    table = Table(title=f"{summary['title']}: {summary['model']} ({summary['prompt']} prompt)")
    table.add_column("score")
    table.add_column("strict", justify="right")
    table.add_column("benchmark", justify="right")
    strict, official = summary["scores"]["strict"] or {}, summary["scores"]["benchmark"] or {}
    for key, value in official.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            s = strict.get(key)
            table.add_row(key, "-" if s is None else f"{s:.4f}", f"{value:.4f}")
    console.print(table)
    state = "complete" if summary["complete"] else f"partial: {summary['n']} of {summary['n_total']}"
    console.print(f"{summary['n']} samples scored ({state}), {len(summary['skipped'])} skipped; "
                  "breakdowns in summary.json")


@app.command()
def gym(
    out: Path,
    n_train: int = typer.Option(512, help="Training rows."),
    n_val: int = typer.Option(64, help="Validation rows."),
    n_test: int = typer.Option(256, help="Test rows."),
    families: str = typer.Option("count,order,direction,color_change", help="Comma-separated task families."),
    frames: int = typer.Option(16), fps: float = typer.Option(4.0), size: int = typer.Option(84),
    difficulty: float = typer.Option(0.3), seed: int = typer.Option(0),
    environment: str = typer.Option("default", help="Visual style (reelrl.gym.environments.ENVIRONMENTS)."),
) -> None:
    """Render the synthetic video gym (H.264 videos + JSONL rows with verifiable answers)."""
    from reelrl.gym import GymSpec, generate_gym

    spec = GymSpec(families=families.split(","), frames=frames, fps=fps, height=size, width=size,
                   difficulty=difficulty, seed=seed, environment=environment)
    info = generate_gym(out, spec, n_train, n_val, n_test)
    console.print_json(json.dumps(info, default=str))


@app.command()
def tiny(out: Path, gym_dir: Optional[Path] = typer.Option(None, help="Train the tokenizer on this gym's text."),
         seed: int = typer.Option(0),
         family: Optional[str] = typer.Option(
             None, help="Build a real-format checkpoint of this family instead (qwen2_vl | qwen2_5_vl | qwen3_vl): "
                        "the published config, processor files and token ids at reduced depth, random weights."),
         like: Optional[Path] = typer.Option(None, help="Reduce this local checkpoint's layout instead of the "
                                                        "published one (its config, processor and tokenizer)."),
         tokenizer: Optional[Path] = typer.Option(None, help="A Qwen tokenizer.json (real vocabulary) for --family."),
         layers: int = typer.Option(2, help="Language-model layers of a real-format checkpoint."),
         vision_depth: int = typer.Option(2, help="Vision blocks of a real-format checkpoint."),
         width: str = typer.Option("published", help="published: real widths; reduced: 2 heads of the real head size."),
         ) -> None:
    """Build a checkpoint for trying reelrl without weights: the tiny Qwen2.5-VL (default), or a real-format
    Qwen2-VL / Qwen2.5-VL / Qwen3-VL at reduced depth (``--family`` or ``--like``)."""
    from reelrl.pipeline import tokenizer_corpus

    paths = [gym_dir / f"{split}.jsonl" for split in ("train", "val", "test")] if gym_dir is not None else []
    if family is None and like is None:
        from reelrl.models.tiny import build_tiny

        path = build_tiny(out, tokenizer_corpus(paths), seed=seed)
        console.print(f"tiny checkpoint written to {path}")
        return
    from reelrl.models.reduced import build_reduced

    if width not in ("published", "reduced"):
        _fail(f"--width must be 'published' or 'reduced', got {width!r}")
    try:
        path = build_reduced(out, family or "qwen2_5_vl", like=like, tokenizer=tokenizer,
                             texts=tokenizer_corpus(paths), num_layers=layers, vision_depth=vision_depth,
                             width=width, seed=seed)  # type: ignore[arg-type]
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    console.print(f"real-format checkpoint written to {path}: {(path / 'README.md').read_text().splitlines()[0][2:]}")


@app.command("grounding-agents")
def grounding_agents(
    recipe: str = typer.Argument(..., help="Recipe whose prompt template, video sampling and eval settings apply."),
    overrides: Optional[list[str]] = OVERRIDES,
    model: str = typer.Option(..., help="Model directory to run the agents with."),
    data: Path = typer.Option(..., help="Temporal-grounding JSONL to read."),
    out: Path = typer.Option(..., help="JSONL to write the rows to."),
    difficulty: bool = typer.Option(True, help="Difficulty estimation: difficulty = 1 - zero-shot IoU."),
    reflect: bool = typer.Option(False, help="Boundary reflection: flag rows whose query the model finds "
                                 "outside the annotated span."),
    drop_flagged: bool = typer.Option(False, help="Leave out the rows boundary reflection flags."),
    min_outside: float = typer.Option(0.5, help="Flag when at least this fraction of the found span lies "
                                      "outside the annotated one."),
) -> None:
    """VideoTG-R1's data agents over a grounding JSONL (reelrl.eval.grounding_agents); prints the counts."""
    from reelrl.pipeline import Pipeline

    cfg = _load(recipe, [*(overrides or []), "stages=[eval]", "eval.split=test", f"data.test={data}"],
                {"model.path": model})
    with _user_errors(out):
        counts = Pipeline(cfg, model_path=model).grounding_agents(
            data, out, difficulty=difficulty, reflect=reflect, drop_flagged=drop_flagged, min_outside=min_outside)
    console.print_json(json.dumps(counts))


@app.command("import-video-r1")
def import_video_r1(src: Path, video_root: Path, out: Path) -> None:
    """Convert a Video-R1 JSON/JSONL file to reelrl's row schema."""
    from reelrl.data.schema import DataError
    from reelrl.data.video_r1 import convert_video_r1

    try:
        counts = convert_video_r1(src, video_root, out)
    except DataError as e:
        _fail(str(e))
    console.print_json(json.dumps(counts))


@app.command("import-charades-sta")
def import_charades_sta(
    src: Path = typer.Argument(..., help="charades_sta_train.txt / charades_sta_test.txt"),
    video_root: Path = typer.Argument(..., help="folder of the Charades videos (<id>.mp4)"),
    out: Path = typer.Argument(..., help="JSONL to write"),
    info: Optional[Path] = typer.Option(None, help="Charades_v1_train.csv / _test.csv: durations (ends clipped)"),
    check_videos: bool = typer.Option(False, help="check every video file exists"),
) -> None:
    """Convert Charades-STA temporal-grounding annotations to reelrl's row schema."""
    from reelrl.data.charades_sta import convert_charades_sta
    from reelrl.data.schema import DataError

    try:
        counts = convert_charades_sta(src, video_root, out, info, check_videos)
    except DataError as e:
        _fail(str(e))
    console.print_json(json.dumps(counts))


@app.command("import-hc-stvg")
def import_hc_stvg(
    src: Path = typer.Argument(..., help="HC-STVG annotations: train.json / test.json (v1), train_v2.json / val_v2.json"),
    video_root: Path = typer.Argument(..., help="folder of the HC-STVG videos (<name> or <folder>/<name>)"),
    out: Path = typer.Argument(..., help="JSONL to write; the ID-prompted videos go to its folder's videos/"),
    tracks: Optional[Path] = typer.Option(None, help="other people's tracks: {video name: [{st_frame, bbox}, ...]}"),
    seed: int = typer.Option(0, help="seed of the ID order (the target's ID is uniform over 1..N)"),
    scale: Optional[int] = typer.Option(None, help="digit scale of the labels (default: STVG-R1's size rule)"),
) -> None:
    """Convert HC-STVG annotations to object-ID grounding rows, drawing ID prompts onto the videos (STVG-R1)."""
    from reelrl.data.hc_stvg import convert_hc_stvg

    with _user_errors(out):
        counts = convert_hc_stvg(src, video_root, out, tracks, seed, scale)
    console.print_json(json.dumps(counts))


@app.command("draw-ids")
def draw_ids(
    src: Path = typer.Argument(..., help="video to draw on"),
    tracks: Path = typer.Argument(..., help='JSON list of {"id", "start_frame" (0-based), "boxes": [[x1, y1, x2, y2], ...]}'),
    out: Path = typer.Argument(..., help="video to write (H.264)"),
    scale: Optional[int] = typer.Option(None, help="digit scale of the labels (default: STVG-R1's size rule)"),
) -> None:
    """Draw each track's ID number at its box on every frame (STVG-R1's visual prompt) and re-encode the video."""
    from reelrl.video.id_prompts import TrackError, draw_ids as draw, load_tracks

    with _user_errors(out):
        try:
            done = draw(src, out, load_tracks(tracks), scale=scale)
        except TrackError as e:
            _fail(str(e))
    console.print_json(json.dumps(done))


@app.command("import-seed-bench-r1")
def import_seed_bench_r1(
    src: Path = typer.Argument(..., help="annotations/validation_L1.jsonl (L2, L3) or training_6k.jsonl (.json too)"),
    data_root: Path = typer.Argument(..., help="SEED-Bench-R1 folder holding videos/<source>/ and images/<source>/"),
    out: Path = typer.Argument(..., help="JSONL to write"),
    level: Optional[str] = typer.Option(None, help="task of every row (default: L1/L2/L3 from the file name, "
                                        "else train)"),
    seed: int = typer.Option(0, help="training files: seed of the 3 negatives drawn and the option order"),
    check_videos: bool = typer.Option(False, help="check every video file exists"),
) -> None:
    """Convert SEED-Bench-R1 annotations (EgoPlan format) to reelrl's row schema (multiple choice, task = level)."""
    from reelrl.data.schema import DataError
    from reelrl.data.seed_bench_r1 import convert_seed_bench_r1

    try:
        counts = convert_seed_bench_r1(src, data_root, out, level, seed, check_videos)
    except DataError as e:
        _fail(str(e))
    console.print_json(json.dumps(counts))


@app.command()
def serve(
    model_dir: Path = typer.Argument(..., help="Checkpoint directory of the progress critic (local)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    max_episodes: int = typer.Option(64, help="Episodes held at once (429 beyond, after evicting an idle one)."),
    evict_idle_s: float = typer.Option(300.0, help="An episode idle this long may be evicted for a new one."),
    max_frames: int = typer.Option(512, help="Frames per episode (409 beyond)."),
    max_pixels: int = typer.Option(448 * 448, help="Pixels per frame (422 beyond)."),
    max_body_bytes: int = typer.Option(8 << 20, help="Request body bytes (413 beyond)."),
    max_batch: int = typer.Option(16, help="Frames of distinct episodes per forward pass."),
    max_wait_ms: float = typer.Option(2.0, help="How long the worker waits for a batch to fill."),
    max_queue: int = typer.Option(256, help="Frames waiting (429 beyond)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Baseline: re-read the whole episode for each frame."),
    device: str = typer.Option("cpu", help="Device of the model (cpu, cuda, cuda:1, ...)."),
    dtype: str = typer.Option("float32", help="Weights dtype: float32, bfloat16, float16, auto."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's)."),
) -> None:
    """Serve a progress critic over HTTP: streamed episode frames in, dense progress per timestep out (SOLE-R1)."""
    import torch

    from reelrl.serve.critic import CriticLimits
    from reelrl.serve.server import ServeOptions, build_app, run

    if threads is not None:
        torch.set_num_threads(threads)
    limits = CriticLimits(max_episodes=max_episodes, evict_idle_s=evict_idle_s, max_frames=max_frames,
                          max_pixels=max_pixels)
    opts = ServeOptions(limits=limits, max_body_bytes=max_body_bytes, max_batch=max_batch,
                        max_wait_s=max_wait_ms / 1000, max_queue=max_queue, reuse_context=not no_cache,
                        device=device, dtype=dtype)
    try:
        application = build_app(model_dir, opts)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        _fail(str(e))
    console.print(f"[bold]reelrl serve[/] {model_dir} on http://{host}:{port} "
                  f"({'no cache: re-reads each episode' if no_cache else 'KV cache per episode'})")
    run(application, host, port)


@app.command()
def templates(name: Optional[str] = typer.Argument(None, help="Show this template's texts (default: list them).")) -> None:
    """The prompt templates a recipe can name in ``prompt.template`` (reelrl.data.templates)."""
    from reelrl.data.templates import STAGES, TEMPLATES, get_template

    if name is None:
        for n in TEMPLATES.names():
            console.print(n)
        return
    try:
        tpl = get_template(name)
    except (KeyError, ImportError, AttributeError, TypeError) as e:
        _fail(str(e).strip("'\""))
    for stage in STAGES:
        console.print(f"[bold]{stage}[/bold] (system: {tpl.system_text(stage)!r})", highlight=False)
        console.print(tpl.user[stage], markup=False, highlight=False)
    for ptype, suffix in (tpl.type_suffix or {}).items():
        console.print(f"[bold]{ptype}[/bold] appends {suffix!r}", highlight=False)


@app.command("online-rl")
def online_rl(
    out: Path = typer.Argument(..., help="Run directory: metrics.jsonl, tb/, result.json."),
    reward: str = typer.Option("served", help="served: the progress of a served critic is the only reward; "
                               "true: the task's true progress (the reference)."),
    url: Optional[str] = typer.Option(None, help="A running `reelrl serve` (e.g. http://127.0.0.1:8000)."),
    critic: Optional[Path] = typer.Option(None, help="Serve this critic checkpoint over HTTP on a free localhost "
                                          "port for the run (instead of --url)."),
    iters: int = typer.Option(60, min=1, help="Policy updates."),
    batch: int = typer.Option(16, min=2, help="Episodes per update."),
    lr: float = typer.Option(0.03, help="Adam learning rate."),
    seed: int = typer.Option(0, help="Seed of the policy and the episodes."),
    eval_episodes: int = typer.Option(64, min=1, help="Greedy evaluation episodes."),
    size: int = typer.Option(112, min=28, help="Frame side in pixels, a multiple of 28 (the critic's training "
                             "frames: recipe sole_r1 renders 112)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's)."),
) -> None:
    """Train a pixel policy on the 2-D reaching task with a served video critic as its only reward (SOLE-R1)."""
    import torch

    from reelrl.online.policy import OnlineConfig, evaluate, save, train_policy
    from reelrl.online.progress import ServedProgress, TrueProgress
    from reelrl.serve.server import BackgroundServer, build_app

    if threads is not None:
        torch.set_num_threads(threads)
    if reward not in ("served", "true"):
        _fail(f"--reward: expected served or true, got {reward!r}")
    if reward == "served" and (url is None) == (critic is None):
        _fail("--reward served needs exactly one of --url (a running reelrl serve) and --critic (a checkpoint)")
    cfg = OnlineConfig(iters=iters, batch=batch, lr=lr, seed=seed, eval_episodes=eval_episodes, height=size, width=size)
    with contextlib.ExitStack() as stack:
        if reward == "true":
            source = TrueProgress()
        else:
            if critic is not None:
                try:
                    url = stack.enter_context(BackgroundServer(build_app(critic))).url
                except (FileNotFoundError, NotADirectoryError, ValueError) as e:
                    _fail(str(e))
            try:
                source = ServedProgress(url, workers=batch)
            except Exception as e:  # noqa: BLE001 - any transport error: no server answers at url
                _fail(f"--url {url}: no reelrl serve answers there ({e})")
            stack.callback(source.close)
        policy, history = train_policy(cfg, source, out)
        result = evaluate(policy, cfg, source)
    save(out, cfg, reward, history, result)
    console.print_json(json.dumps(result))


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="One run directory, or several to compare."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default: RUN/report.html; with "
                                       "several runs ./report-compare.html)."),
    max_groups: int = typer.Option(40, min=1, help="Sampled training groups shown per training stage "
                                   "(spread over the logged steps)."),
    max_eval: int = typer.Option(40, min=1, help="Eval samples shown per evaluation (the first N rows)."),
) -> None:
    """Write a self-contained HTML report of a run (curves, eval tables, rollout browser), or compare runs."""
    from reelrl.report import ReportError, write_comparison, write_report

    try:
        if len(runs) == 1:
            path = write_report(runs[0], out, max_groups=max_groups, max_eval=max_eval)
        else:
            path = write_comparison(runs, out if out is not None else Path("report-compare.html"))
    except ReportError as e:
        _fail(str(e))
    console.print(f"wrote {path}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
