"""Runs a recipe's stages (sft, eval, rl, dpo) in one run directory, resumably.

Layout of a run directory::

    config.yaml                  the fully resolved recipe
    <i>-<stage>/                 one folder per stage, in order
        metrics.jsonl, tb/       step metrics (training stages)
        checkpoint-<step>/       resumable state (training stages)
        model/                   final weights + processor (Auto-class loadable)
        eval.json, eval_samples.jsonl   (eval stages)
        done.json                written when the stage completed
    summary.json, summary.md     the table of every evaluation

Each training stage starts from the model the previous training stage saved,
so a resumed run skips finished stages and continues the interrupted one from
its last checkpoint. Every training stage runs through the one stage loop
(:func:`reelrl.train.loop.fit`); only its trainer differs (:data:`TRAINERS`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from reelrl.config import ConfigError, RecipeConfig, read_recipe, save_config
from reelrl.data.prompts import PromptEncoder
from reelrl.data.schema import VideoRow, load_jsonl, write_jsonl
from reelrl.data.templates import get_template
from reelrl.dist.fsdp import shard_model
from reelrl.dist.parallel import ParallelDims, init_parallel
from reelrl.envs.base import prompt_row
from reelrl.eval.grounding_agents import estimate_difficulty, reflect_boundaries
from reelrl.eval.episodes import evaluate_episodes
from reelrl.eval.levels import level_chance, level_rows, level_specs, prepare_levels, print_levels, summarize_levels
from reelrl.eval.runner import evaluate, print_eval
from reelrl.models.load import apply_lora, freeze_vision_tower, load_model_and_processor
from reelrl.models.precision import loaded_half_dtype, upcast_trainable
from reelrl.models.vlm import VLM
from reelrl.monitor.metrics import MetricsLogger
from reelrl.rewards import RewardSpec
from reelrl.rollout.engine import build_engine
from reelrl.rollout.episodes import EpisodeRunner
from reelrl.seeding import seed_everything
from reelrl.train.catalog import check_recipe
from reelrl.train.dpo import DPOTrainer
from reelrl.train.durable import explain_write_error
from reelrl.train.loop import StageTrainer, fit
from reelrl.train.policy import ReferencePolicy, sampling_params
from reelrl.train.rl import RLTrainer
from reelrl.train.sft import SFTTrainer

STAGE_LABEL = {"sft": "SFT", "rl": "GRPO", "dpo": "DPO"}
#: which texts of the prompt template a stage uses (DPO pairs are rollouts)
PROMPT_STAGE = {"sft": "sft", "rl": "rl", "dpo": "rl", "eval": "eval"}
#: per-task summary-row columns (:func:`critic_columns`) shown after the accuracies -> their header suffix
SUMMARY_COLUMNS = {"progress_mae": "MAE", "id_accuracy": "ID acc.", "mIoU": "mIoU"}
TRAINERS: dict[str, type[StageTrainer]] = {"sft": SFTTrainer, "rl": RLTrainer, "dpo": DPOTrainer}


def make_run_dir(run_dir: Path) -> None:
    """Create the run directory and check it is writable; a ConfigError naming ``output_dir`` and the cause if not."""
    for p in [run_dir, *run_dir.parents]:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"output_dir: {p} is a file, not a directory" + ("" if p == run_dir else
                              f" (the run directory would be {run_dir})"))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output_dir: cannot write the run directory: {explain_write_error(e, run_dir)}") from e


def load_recipe(path: str | Path, overrides: list[str] | None = None,
                fill: dict[str, Any] | None = None) -> RecipeConfig:
    """A recipe file or packaged name with dotted overrides: fields validated, then every component checked.

    Raises :class:`reelrl.config.ConfigError` naming the field; nothing is
    loaded or built (see :func:`reelrl.train.catalog.check_recipe`).
    """
    return check_recipe(read_recipe(path, overrides, fill))


def prepare_data(cfg: RecipeConfig) -> None:
    """Generate the synthetic gym when the recipe asks for it and its files are missing."""
    gym = cfg.data.gym
    if gym.enabled:
        from pydantic import ValidationError

        from reelrl.config import ConfigError
        from reelrl.gym import GymSpec, ensure_gym

        try:
            spec = GymSpec(**gym.spec)
        except ValidationError as e:
            errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'spec'}: {x['msg']}" for x in e.errors())
            raise ConfigError(f"data.gym.spec: {errs}") from None
        ensure_gym(gym.dir, spec, gym.n_train, gym.n_val, gym.n_test)
        prepare_levels(cfg)


def prepare_model(cfg: RecipeConfig) -> None:
    """Build the tiny checkpoint at ``model.path`` when asked and missing."""
    path = Path(cfg.model.path)
    if path.exists() or not cfg.model.build_tiny_if_missing:
        return
    from reelrl.models.tiny import build_tiny

    paths = []
    for split in ("train", "val", "test"):
        try:
            paths.append(cfg.split_path(split))
        except ValueError:
            continue
    paths += [d / "test.jsonl" for _, d in level_specs(cfg).values()]  # eval.levels: their texts too
    template = get_template(cfg.prompt.template)
    corpus = tokenizer_corpus(paths, extra=template.texts(), trace=cfg.sft.trace, wrapped=template.wrap_think)
    build_tiny(path, corpus, **cfg.model.tiny)


def tokenizer_corpus(jsonl_paths: list[Path], extra: list[str] = (), trace: str = "plain",
                     wrapped: bool = True) -> list[str]:
    """Texts to train the tiny tokenizer on: the generic corpus plus the rows' prompts, traces (in the
    ``sft.trace`` style, reelrl.gym.clues.TRACES) and answers."""
    from reelrl.gym.clues import TRACES
    from reelrl.models.tiny import default_corpus

    style = TRACES.get(trace)
    texts = [*default_corpus(), *extra]
    for p in jsonl_paths:
        if p.is_file():
            for r in load_jsonl(p, check_videos=False):
                texts += [r.prompt_text(), style(r, wrapped) or "", f"<answer>{r.answer}</answer>"]
                stream = r.meta.get("stream", {})
                texts += [t for t in [*stream.get("thoughts", []), stream.get("answer_reasoning")] if isinstance(t, str)]
    return texts


def load_rows(cfg: RecipeConfig, split: str) -> list[VideoRow]:
    """The rows of ``split``, cut to ``data.max_rows`` / ``eval.max_rows``; with an ``rl.env`` registered with a
    ``prompt_row`` trait, every row as its episode opens (:mod:`reelrl.envs.base`)."""
    rows = load_jsonl(cfg.split_path(split))
    if cfg.rl.env is not None and (rewrite := prompt_row(cfg.rl.env.name)) is not None:
        rows = [rewrite(r) for r in rows]
    if split in ("train", "sft_train") and cfg.data.max_rows:
        rows = rows[: cfg.data.max_rows]
    if split not in ("train", "sft_train") and cfg.eval.max_rows:
        rows = rows[: cfg.eval.max_rows]
    return rows


class Pipeline:
    """Holds the current model between stages and runs each stage.

    Every process of a distributed run builds one (``torchrun ... -m reelrl
    train``); the process layout comes from :func:`reelrl.dist.parallel.init_parallel`
    and reaches the trainers as one :class:`ParallelDims`. Rank 0 alone writes
    the config, the gym and tiny model (the others wait), logs, summaries,
    ``done.json`` files and final models.
    """

    def __init__(self, cfg: RecipeConfig, model_path: str | None = None, dims: ParallelDims | None = None,
                 label: str = "base") -> None:
        self.cfg = check_recipe(cfg)
        try:
            self.dims = dims if dims is not None else init_parallel(cfg.parallel, cfg.device)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.run_dir = cfg.run_dir()
        self.device = self.dims.device
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.model_path = model_path or cfg.model.path
        self.label = label  # names the starting model in results ("base", or the model evaluated)
        self.console = Console(quiet=not self.dims.is_main)

    # ----------------------------------------------------------------- model
    def load(self, for_training: bool) -> tuple[VLM, object]:
        m = self.cfg.model
        model, processor = load_model_and_processor(
            self.model_path, dtype=m.dtype, device=str(self.device), attn_implementation=m.attn_implementation
        )
        if for_training:
            if m.freeze_vision:
                freeze_vision_tower(model, keep_merger=m.train_merger)
            if m.lora.enabled:
                model = apply_lora(model, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.target_modules,
                                   freeze_vision=m.freeze_vision, train_merger=m.train_merger)
            if m.gradient_checkpointing:
                model.activation_checkpointing_enable()  # non-reentrant (MR-SP replays Ulysses in it)
        vlm = self.dims.vlm(model)
        if for_training and m.master_weights == "float32":  # mixed precision (reelrl.models.precision)
            vlm.compute_dtype = loaded_half_dtype(model)
            upcast_trainable(model)
        return vlm, processor

    def encoder(self, processor, stage_dir: Path | None = None, kind: str = "rl",
                rows: list[VideoRow] = ()) -> PromptEncoder:
        """The prompt encoder of a stage of ``kind``: the prompt template's texts for it, its video sampling
        resolved for the checkpoint (saved in ``stage_dir``); every row of ``rows`` checked against the template."""
        video = self.cfg.eval_video() if kind == "eval" else self.cfg.video
        try:
            enc = PromptEncoder(processor, video, self.cfg.prompt.template, self.cfg.prompt.system,
                                self.device, stage=PROMPT_STAGE[kind],
                                max_prompt_tokens=self.cfg.data.max_prompt_tokens)
        except ValueError as e:
            raise ConfigError(f"{self.model_path}: {e}") from None
        enc.check_rows(rows)
        if stage_dir is not None and self.dims.is_main:
            stage_dir.mkdir(parents=True, exist_ok=True)
            (stage_dir / "video_sampling.json").write_text(enc.video.model_dump_json(indent=2) + "\n")
        return enc

    # ---------------------------------------------------------------- stages
    def run(self, resume: bool = False, stop_after: int | None = None) -> dict:
        cfg, dims = self.cfg, self.dims
        if dims.is_main:
            make_run_dir(self.run_dir)
            save_config(cfg, self.run_dir / "config.yaml")
            prepare_data(cfg)
            if self.model_path == cfg.model.path:  # a model given on the command line builds nothing
                prepare_model(cfg)
        dims.barrier()
        results: list[dict] = []
        history: list[str] = []
        for i, kind in enumerate(cfg.stages):
            stage_dir = self.run_dir / f"{i}-{kind}"
            done = stage_dir / "done.json"
            if done.is_file() and resume:
                res = json.loads(done.read_text())
                self.console.print(f"[dim]stage {i} ({kind}) already done, skipping")
            else:
                if done.is_file():
                    raise FileExistsError(f"{stage_dir} already finished; use --resume or another output_dir")
                seed_everything(cfg.seed + i)
                res = (self.stage_eval(stage_dir, history) if kind == "eval"
                       else self.stage_train(kind, stage_dir, resume, stop_after))
                if res is None:  # interrupted on purpose (stop_after)
                    return {"interrupted": True, "stage": i}
                if dims.is_main:
                    done.write_text(json.dumps(res, indent=2))
                dims.barrier()
            if kind in STAGE_LABEL:
                history.append(STAGE_LABEL[kind])
                self.model_path = str(stage_dir / "model")
            res = {**res, "stage": i, "kind": kind, "label": self._label(history)}
            results.append(res)
        summary = self.summarize(results)
        return summary

    def _label(self, history: list[str]) -> str:
        """The model at this point of the run: the starting model's label, then the stages trained."""
        return "+".join(history) if history and self.label == "base" else "+".join([self.label, *history])

    def _logger(self, stage_dir: Path) -> MetricsLogger:
        lg = self.cfg.logging
        return MetricsLogger(stage_dir, tensorboard=lg.tensorboard, wandb=lg.wandb, project=lg.wandb_project,
                             config=self.cfg.model_dump(mode="json"), enabled=self.dims.is_main)

    def _reference(self, vlm: VLM) -> ReferencePolicy:
        """The frozen reference: the policy with LoRA disabled, or a frozen copy of the stage's start model."""
        if self.cfg.model.lora.enabled:
            return ReferencePolicy(vlm, None)
        ref_model, _ = self.load(for_training=False)
        ref_model.model.requires_grad_(False)
        if self.dims.fsdp:
            shard_model(ref_model.wrapped, self.dims)
        return ReferencePolicy(vlm, ref_model)

    def stage_train(self, kind: str, stage_dir: Path, resume: bool, stop_after: int | None) -> dict | None:
        """A training stage (``sft``, ``rl``, ``dpo``): its trainer run by the stage loop; None when stopped early."""
        trainer_cls = TRAINERS[kind]
        vlm, processor = self.load(for_training=True)
        if self.dims.fsdp:
            shard_model(vlm.wrapped, self.dims)
        reference = self._reference(vlm) if trainer_cls.needs_reference(self.cfg) else None
        rows = load_rows(self.cfg, "sft_train" if kind == "sft" else "train")
        trainer = trainer_cls(self.cfg, vlm, processor.tokenizer, self.encoder(processor, stage_dir, kind, rows),
                              rows, stage_dir, reference, dims=self.dims)
        return fit(trainer, processor, self._logger(stage_dir), self.cfg.checkpoint, progress=self.cfg.logging.progress,
                   resume=resume, stop_after=stop_after)

    def stage_eval(self, stage_dir: Path, history: list[str]) -> dict:
        """Evaluate ``eval.split``, or with ``eval.levels`` every level's test rows (``{"levels": {name: result}}``,
        each level's files in ``stage_dir/<name>``)."""
        vlm, processor = self.load(for_training=False)
        label = self._label(history)
        if self.cfg.eval.levels:
            chance = level_chance(self.cfg)
            return {"levels": {name: self._evaluate(vlm, processor, level_rows(self.cfg, name), stage_dir / name,
                                                    label, f"level {name} accuracy after {label}", chance[name])
                               for name in self.cfg.eval.levels}}
        return self._evaluate(vlm, processor, load_rows(self.cfg, self.cfg.eval.split), stage_dir, label,
                              f"{self.cfg.eval.split} accuracy after {label}", self.chance())

    def _evaluate(self, vlm: VLM, processor, rows: list[VideoRow], out_dir: Path, label: str, title: str,
                  chance: dict[str, float] | None) -> dict:
        """One :func:`evaluate` of ``rows`` into ``out_dir``, its table printed with ``chance``."""
        sampling = sampling_params(self.cfg, processor.tokenizer, vlm, self.cfg.eval.max_new_tokens)
        specs = [RewardSpec(r.name, r.weight, r.kwargs) for r in self.cfg.rl.rewards]
        encoder = self.encoder(processor, out_dir, "eval", rows)
        try:
            if self.cfg.rl.env is not None:  # the multi-turn task the recipe trains (reelrl.eval.episodes)
                runner = EpisodeRunner(self.cfg.rl.env, vlm, encoder, sampling, self.cfg.rl.share_prefix)
                res = evaluate_episodes(runner, encoder, rows, specs, out_dir, self.cfg.logging.progress,
                                        title=f"eval ({label})", batch_size=self.cfg.eval.batch_size, dims=self.dims)
            else:
                res = evaluate(vlm, processor.tokenizer, encoder, rows, sampling, specs, out_dir,
                               self.cfg.logging.progress, title=f"eval ({label})", batch_size=self.cfg.eval.batch_size,
                               dims=self.dims, engine=build_engine(self.cfg.rollout.engine, vlm,
                                                                   self.cfg.rl.share_prefix,
                                                                   **self.cfg.rollout.engine_kwargs))
        finally:
            encoder.close()
        if self.dims.is_main:
            print_eval(res, title, chance)
        return res

    def benchmark(self, name: str, root: Path, out_dir: Path, *, prompt: str = "official",
                  annotations: Path | None = None, limit: int | None = None, overwrite: bool = False) -> dict:
        """A public benchmark (:mod:`reelrl.eval.bench`) on this pipeline's model, resumable, into ``out_dir``.

        ``prompt``: ``official`` (the benchmark's own user text, the chat template's system turn) or ``recipe``
        (the recipe's prompt template, as in training). The recipe gives the frame sampling (``eval.video`` over
        ``video``), ``eval.max_new_tokens``, ``eval.batch_size`` and the rollout engine.
        """
        from reelrl.data.templates import STAGES, PromptTemplate
        from reelrl.eval.bench import get_benchmark
        from reelrl.eval.bench.run import run_benchmark

        if prompt not in ("official", "recipe"):
            raise ConfigError(f"--prompt must be 'official' or 'recipe', got {prompt!r}")
        bench = get_benchmark(name)
        rows = bench.load(Path(root), annotations)
        vlm, processor = self.load(for_training=False)
        if prompt == "official":
            template = PromptTemplate(f"{name}:official", {s: "{question}" for s in STAGES}, question=bench.prompt,
                                      system={s: bench.system for s in STAGES})
            system = bench.system
        else:
            template, system = get_template(self.cfg.prompt.template), self.cfg.prompt.system
        sampling = sampling_params(self.cfg, processor.tokenizer, vlm, self.cfg.eval.max_new_tokens)
        encoder = PromptEncoder(processor, self.cfg.eval_video(), template, system, self.device, stage="eval",
                                max_prompt_tokens=self.cfg.data.max_prompt_tokens)
        encoder.check_rows(rows)
        settings = {"bench": name, "root": str(Path(root).absolute()), "model": self.label,
                    "model_path": str(self.model_path), "prompt": prompt,
                    "template": template.name, "video": encoder.video.model_dump(mode="json"),
                    "max_new_tokens": self.cfg.eval.max_new_tokens}
        try:
            return run_benchmark(bench, rows, vlm, processor.tokenizer, encoder, sampling, Path(out_dir), settings,
                                 limit=limit, overwrite=overwrite, batch_size=self.cfg.eval.batch_size,
                                 dims=self.dims, progress=self.cfg.logging.progress,
                                 engine=build_engine(self.cfg.rollout.engine, vlm, self.cfg.rl.share_prefix,
                                                     **self.cfg.rollout.engine_kwargs))
        finally:
            encoder.close()

    def grounding_agents(self, src: Path, out: Path, *, difficulty: bool = True, reflect: bool = False,
                         drop_flagged: bool = False, min_outside: float = 0.5) -> dict[str, dict]:
        """VideoTG-R1's data agents (:mod:`reelrl.eval.grounding_agents`) with this pipeline's model on the rows
        of ``src``; writes them to ``out`` and returns the counts of each agent."""
        rows = load_jsonl(src)
        vlm, processor = self.load(for_training=False)
        sampling = sampling_params(self.cfg, processor.tokenizer, vlm, self.cfg.eval.max_new_tokens)
        encoder = self.encoder(processor, None, "eval", rows)
        decode = dict(progress=self.cfg.logging.progress, batch_size=self.cfg.eval.batch_size, dims=self.dims,
                      engine=build_engine(self.cfg.rollout.engine, vlm, self.cfg.rl.share_prefix,
                                          **self.cfg.rollout.engine_kwargs))
        counts: dict[str, dict] = {}
        try:
            if difficulty:
                rows, c = estimate_difficulty(vlm, processor.tokenizer, encoder, rows, sampling, **decode)
                counts["difficulty"] = vars(c)
            if reflect:
                rows, c = reflect_boundaries(vlm, processor.tokenizer, encoder, rows, sampling,
                                             min_outside=min_outside, drop_flagged=drop_flagged, **decode)
                counts["reflection"] = vars(c)
        finally:
            encoder.close()
        if self.dims.is_main:
            write_jsonl(rows, out)
        return counts

    # --------------------------------------------------------------- summary
    def chance(self) -> dict[str, float] | None:
        gym_json = Path(self.cfg.data.gym.dir) / "gym.json"
        if self.cfg.data.gym.enabled and gym_json.is_file():
            return json.loads(gym_json.read_text()).get("chance_accuracy")
        return None

    def chance_columns(self, per_task: dict) -> dict:
        """The chance row's ``progress_mae`` (a constant 0.5 guess, gym.json ``chance_progress_mae``) and
        ``id_accuracy`` (a uniform guess among the shown IDs, gym.json ``chance_id_accuracy``) for the evaluated
        tasks that have them; empty when there are none."""
        gym_json = Path(self.cfg.data.gym.dir) / "gym.json"
        if not (self.cfg.data.gym.enabled and gym_json.is_file()):
            return {}
        info = json.loads(gym_json.read_text())
        mae = {t: v["constant_0.5"] for t, v in info.get("chance_progress_mae", {}).items() if t in per_task}
        ids = {t: v for t, v in info.get("chance_id_accuracy", {}).items() if t in per_task}
        return {k: v for k, v in (("progress_mae", mae), ("id_accuracy", ids)) if v}

    def summarize(self, results: list[dict]) -> dict:
        evals = [r for r in results if r["kind"] == "eval"]
        if evals and "levels" in evals[0]:  # eval.levels: one column per level (reelrl.eval.levels)
            summary = {"recipe": self.cfg.name, "seed": self.cfg.seed, "split": "test",
                       **summarize_levels(self.cfg, evals)}
            if self.dims.is_main:
                (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
                print_levels(summary, self.run_dir)
            return summary
        chance = self.chance()
        rows = []
        if chance and evals:
            per = evals[0]["per_task"]
            n = sum(v["n"] for v in per.values())
            overall = sum(chance.get(t, 0.0) * v["n"] for t, v in per.items()) / max(1, n)
            rows.append({"model": "chance", "accuracy": overall, "mean_reward": None, "consistent": None,
                         "per_task": {t: chance.get(t) for t in per}, **self.chance_columns(per)})
        for r in evals:
            rows.append({"model": r["label"], "accuracy": r["accuracy"], "mean_reward": r["mean_reward"],
                         "format": r["format"], "consistent": r.get("consistent"),
                         "claim_correct": r.get("claim_correct"),
                         "per_task": {t: v["accuracy"] for t, v in r["per_task"].items()}, **critic_columns(r)})
        summary = {"recipe": self.cfg.name, "seed": self.cfg.seed, "split": self.cfg.eval.split, "rows": rows}
        if not self.dims.is_main:
            return summary
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if rows:
            self._print_summary(summary)
        return summary

    def _print_summary(self, summary: dict) -> None:
        rows = summary["rows"]
        tasks = list(rows[-1]["per_task"])
        extra = [(key, t) for key in SUMMARY_COLUMNS for t in rows[-1].get(key, {})]  # after the accuracies
        cols = [f"{t} {SUMMARY_COLUMNS[key]}" for key, t in extra]
        table = Table(title=f"{summary['recipe']} (seed {summary['seed']}): held-out {summary['split']} accuracy")
        for col in ["model", "accuracy", "mean reward", *tasks, *cols, "answer = claim"]:
            table.add_column(col, justify="left" if col == "model" else "right")
        md = ["| model | accuracy | mean reward | " + " | ".join([*tasks, *cols]) + " | answer = claim |",
              "|---" * (4 + len(tasks) + len(cols)) + "|"]

        def num(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        for r in rows:
            cells = [r["model"], num(r["accuracy"]), num(r["mean_reward"])]
            cells += [f"{r['per_task'].get(t, float('nan')):.3f}" for t in tasks]
            cells += [num(r.get(key, {}).get(t)) for key, t in extra] + [num(r.get("consistent"))]
            table.add_row(*cells)
            md.append("| " + " | ".join(cells) + " |")
        Console().print(table)
        (self.run_dir / "summary.md").write_text("\n".join(md) + "\n")


def critic_columns(result: dict) -> dict:
    """A summary row's columns beyond the accuracy, from an eval result: a progress critic's ``progress_mae`` and
    ``failure_accuracy`` (:mod:`reelrl.eval.critic`), and object-ID grounding's ``id_accuracy`` and span ``mIoU``
    (:func:`reelrl.rewards.stvg.id_grounding_metrics`; its accuracy is the m_vIoU), each per task; empty for
    evaluations without such tasks."""
    per = result.get("per_task", {})
    cols = {
        "progress_mae": {t: v["progress"]["mae"] for t, v in per.items() if "progress" in v},
        "failure_accuracy": {t: v["failure_detection"]["accuracy"] for t, v in per.items() if "failure_detection" in v},
    }
    ids = {t: v["grounding"] for t, v in per.items() if "id_accuracy" in v.get("grounding", {})}
    cols.update(id_accuracy={t: g["id_accuracy"] for t, g in ids.items()}, mIoU={t: g["mIoU"] for t, g in ids.items()})
    return {k: v for k, v in cols.items() if v}
