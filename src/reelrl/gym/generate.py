"""Write a synthetic video gym to disk: JSONL splits, H.264 videos and a manifest.

Layout of ``out_dir``::

    gym.json                      spec, counts, per-family chance accuracy, seeds
    train.jsonl val.jsonl test.jsonl
    videos/{split}/{family}_{index:06d}.mp4

Seeds: sample ``i`` of split ``s`` (0 train, 1 val, 2 test) draws from
``np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(s, i)))``
-- the same stream ``SeedSequence(spec.seed).spawn(3)[s].spawn(...)[i]``
would give -- so splits never share a stream and every sample can be made
alone, in any order, by any worker. Families are interleaved round-robin
(sample ``i`` is family ``families[i % len(families)]``). The same spec gives
byte-identical JSONL files and videos that decode to identical frames.

Grouped families (registered with ``group_size=k``, e.g. the paired
counterexamples of :mod:`reelrl.gym.physics`): the family's samples, counted
in its own order (``j = i // len(families)``), form groups of ``k``
consecutive ones; every member of a group draws from the group's stream
``SeedSequence(spec.seed, spawn_key=(s, i0, k))``, ``i0`` the index of its
first member (three-part keys never equal a sample's two-part key), and the
family is called with ``member=j % k``. Such samples record that key as
``meta["spawn_key"]`` and ``meta["group"] = {"id", "member", "size"}`` (the
id is the row id of the first member); a split whose share of the family is
not a multiple of ``k`` ends with an incomplete group. Other families are
unchanged.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from reelrl.data.schema import VideoRow, write_jsonl
from reelrl.gym.tasks import TASKS, GymSpec, Sample, chance_accuracy
from reelrl.video.decode import X264_PARAMS, write_video

SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST = "gym.json"
GYM_FORMAT = 3  # 3: the encoder options are part of the manifest (2 was written by two different encoders)
"""Bumped when the on-disk layout or the generators change meaning (forces ``ensure_gym`` to rebuild)."""
ENCODER: dict[str, Any] = {"codec": "libx264", "crf": 18, "preset": "fast"}
"""How the gym encodes its videos (``write_video`` keywords); recorded in the manifest with the x264 options."""


def sample_rng(spec: GymSpec, split: str, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of ``split`` (disjoint across splits and indices)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    seq = np.random.SeedSequence(spec.seed, spawn_key=(SPLITS.index(split), index))
    return np.random.default_rng(seq)


def make_sample(spec: GymSpec, split: str, index: int) -> tuple[str, Sample]:
    """Family name and :class:`Sample` of sample ``index`` of ``split`` (pure, no disk I/O; grouped families:
    module docstring)."""
    family = spec.families[index % len(spec.families)]
    k = int(TASKS.trait(family, "group_size", 1))  # type: ignore[arg-type]
    if k == 1:
        return family, TASKS.get(family)(sample_rng(spec, split, index), spec)
    member = (index // len(spec.families)) % k
    first = index - member * len(spec.families)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    key = (SPLITS.index(split), first, k)
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=key))
    sample = TASKS.get(family)(rng, spec, member=member)
    sample.meta.update(spawn_key=list(key), group={"id": f"{split}-{family}-{first:06d}", "member": member, "size": k})
    return family, sample


def sample_row(spec: GymSpec, split: str, index: int, family: str, sample: Sample, video: str) -> VideoRow:
    """The :class:`VideoRow` of one sample whose video is written at ``video`` (relative path)."""
    return VideoRow(
        id=f"{split}-{family}-{index:06d}",
        video=video,
        question=sample.question,
        options=sample.options,
        answer=sample.answer,
        problem_type=sample.problem_type,  # type: ignore[arg-type]
        task=family,
        reasoning=sample.reasoning,
        time_span=sample.time_span,
        difficulty=round(sample.difficulty, 4),
        meta={"seed": spec.seed, "spawn_key": [SPLITS.index(split), index], "fps": sample.fps,
              "frames": int(sample.frames.shape[0]), **sample.meta},
        images=sample.images,
    )


def write_clips(path: Path, sample: Sample) -> None:
    """A streaming sample's clips (``meta["stream"]["clips"]``, :mod:`reelrl.gym.streaming`), one file each beside
    ``path`` (``<stem>_c<k>.mp4``, frames ``[start * fps, end * fps)``); each clip's ``video`` names its file."""
    for k, clip in enumerate(sample.meta["stream"]["clips"], start=1):
        f0, f1 = round(clip["start"] * sample.fps), round(clip["end"] * sample.fps)
        name = f"{path.stem}_c{k}.mp4"
        write_video(path.parent / name, sample.frames[f0:f1], sample.fps, **ENCODER)  # [f1-f0, H, W, 3]
        clip["video"] = name


def _write_one(args: tuple[str, GymSpec, str, int]) -> dict[str, Any]:
    """Worker: render sample ``index`` of ``split``, write its video (and a streaming sample's clips), return its
    row as a dict."""
    out_dir, spec, split, index = args
    family, sample = make_sample(spec, split, index)
    rel = f"videos/{split}/{family}_{index:06d}.mp4"
    write_video(Path(out_dir) / rel, sample.frames, sample.fps, **ENCODER)  # frames [T, H, W, 3]
    if "stream" in sample.meta:
        write_clips(Path(out_dir) / rel, sample)
    return sample_row(spec, split, index, family, sample, rel).model_dump()


def _run(jobs: list[tuple[str, GymSpec, str, int]], workers: int) -> Iterator[dict[str, Any]]:
    """Yield rows of ``jobs`` in job order, in this process or a pool of ``workers``."""
    if workers <= 1:
        yield from map(_write_one, jobs)
        return
    # 'spawn': forking a process that has torch or prefetch threads running can deadlock the child.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_write_one, jobs, chunksize=8)


def manifest(spec: GymSpec, counts: dict[str, int]) -> dict[str, Any]:
    """The content of ``gym.json`` (``chance_progress_mae`` / ``chance_id_accuracy`` only for gyms with families
    that register them: progress critics, object-ID grounding)."""
    info = {
        "format": GYM_FORMAT,
        "encoder": {**ENCODER, "x264_params": X264_PARAMS},  # other options, other bytes: rebuild
        "spec": spec.model_dump(mode="json"),
        "counts": counts,
        "families_per_split": {
            s: {f: len(range(i, n, len(spec.families))) for i, f in enumerate(spec.families)}
            for s, n in counts.items()
        },
        "chance_accuracy": {f: chance_accuracy(f, spec) for f in spec.families},
        **_chance_traits(spec),
        "seeds": {s: {"entropy": spec.seed, "spawn_key_prefix": [k]} for k, s in enumerate(SPLITS)},
        "video_path": "videos/{split}/{family}_{index:06d}.mp4",
    }
    return info


CHANCE_TRAITS = {"chance_mae": "chance_progress_mae", "chance_id_accuracy": "chance_id_accuracy"}
"""Family traits (``TASKS.trait``) of chance levels besides the accuracy -> their ``gym.json`` key."""


def _chance_traits(spec: GymSpec) -> dict[str, Any]:
    """For each :data:`CHANCE_TRAITS` trait some of ``spec``'s families register, ``{key: {family: value}}``:
    ``chance_progress_mae`` (``{"constant_0.5": ..., "uniform": ...}``, :mod:`reelrl.gym.manipulation`) and
    ``chance_id_accuracy`` (a uniform guess among the shown IDs, :mod:`reelrl.gym.id_grounding`); no key when no
    family registers the trait."""
    out: dict[str, Any] = {}
    for trait, key in CHANCE_TRAITS.items():
        got = {f: fn(spec) for f in spec.families if (fn := TASKS.trait(f, trait)) is not None}
        if got:
            out[key] = got
    return out


def generate_gym(
    out_dir: str | Path,
    spec: GymSpec,
    n_train: int,
    n_val: int,
    n_test: int,
    *,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the gym into ``out_dir`` (see module docstring); returns the manifest.

    Existing ``{split}.jsonl`` files and ``videos/{split}`` folders in ``out_dir``
    are replaced; nothing else there is touched. ``workers > 1`` renders and
    encodes in a process pool; the output does not depend on it.
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for s, n in counts.items():
        if n < 0:
            raise ValueError(f"generate_gym: n_{s} must be >= 0, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # an interrupted run leaves no valid manifest
    jobs = [(str(out), spec, s, i) for s in SPLITS for i in range(counts[s])]
    rows: dict[str, list[VideoRow]] = {s: [] for s in SPLITS}
    for s in SPLITS:
        shutil.rmtree(out / "videos" / s, ignore_errors=True)
        (out / f"{s}.jsonl").unlink(missing_ok=True)
    it = _run(jobs, workers)
    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("gym"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
            task = bar.add_task("videos", total=len(jobs))
            for job, row in zip(jobs, it):
                rows[job[2]].append(VideoRow.model_validate(row))
                bar.advance(task)
    else:
        for job, row in zip(jobs, it):
            rows[job[2]].append(VideoRow.model_validate(row))
    for s in SPLITS:
        if counts[s]:
            write_jsonl(rows[s], out / f"{s}.jsonl")
    info = manifest(spec, counts)
    (out / MANIFEST).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return info


def ensure_gym(
    out_dir: str | Path,
    spec: GymSpec,
    n_train: int,
    n_val: int,
    n_test: int,
    *,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Generate the gym unless ``out_dir/gym.json`` already describes this spec and these counts.

    Returns ``out_dir``. A manifest from another spec, other counts, another
    :data:`GYM_FORMAT`, or a missing split file triggers a full regeneration.
    """
    out = Path(out_dir)
    wanted = manifest(spec, {"train": n_train, "val": n_val, "test": n_test})
    path = out / MANIFEST
    try:
        have = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        have = None
    splits_ok = all((out / f"{s}.jsonl").is_file() for s, n in wanted["counts"].items() if n)
    if have != json.loads(json.dumps(wanted)) or not splits_ok:
        generate_gym(out, spec, n_train, n_val, n_test, workers=workers, progress=progress)
    return out
