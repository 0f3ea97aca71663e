"""On-disk cache of video embeddings (vision-tower outputs) shared across epochs and processes.

Within one step reelrl already runs the vision tower once per prompt and reuses
the result for the G rollouts and every log-prob pass (``rl.cache_vision``).
This module keeps those embeddings *across* steps and epochs: the second time a
video is seen with the same sampling, the tower is not run at all.

When it is valid
----------------
Only while the vision tower is **frozen** (``model.freeze_vision: true``, or LoRA
on the language model only). A tower that trains changes its output after every
optimizer step; :class:`reelrl.train.rl.RLTrainer` refuses the cache in that
case, and the key below contains a fingerprint of the tower's weights, so a
cache written by a different (e.g. later fine-tuned) tower is never read.

Key
---
One entry per (video content, sampling, frame variant, processor, vision weights):

* ``video``: SHA-256 of the file's bytes (not its path: a copied or renamed
  file still hits, a file rewritten in place misses). The hash is computed once
  per ``(path, mtime_ns, size)`` and remembered in memory and in
  ``<root>/hashes/`` so later runs do not re-read the file;
* ``sampling``: every field of :class:`reelrl.video.sample.VideoSampling`;
* ``variant``: the name of a frame transform (augmentation, shuffling...). A
  prompt built with an unnamed transform is never cached. The name must
  determine the frames: a transform that draws new randomness on every call
  must put its seed in the name, or it will be served the frames of its first
  call (the in-memory prompt cache makes the same assumption);
* ``processor``: the patching spec (patch size, mean/std...) of the processor;
* ``vision``: :func:`vision_fingerprint` of the tower (its config, parameter and
  buffer bytes, dtypes and shapes).

Each hit is also checked against the prompt's ``video_grid_thw``; a mismatch is
treated as a miss.

Storage and concurrency
-----------------------
``<root>/emb/<k[:2]>/<k>.safetensors``, one file per entry, with the structure
of the ``BaseModelOutputWithPooling`` (or subclass) in the safetensors metadata.
A writer saves to a temporary file in the same directory and ``os.replace``-s
it into place, so readers never see a partial file (a file that fails to load
anyway, e.g. after a power loss, is deleted and counted as a miss). The
size bound (bytes) is enforced after each write under an inter-process file
lock (``filelock``), evicting the least recently used entries first; a hit
refreshes the entry's mtime, which is the LRU clock. Several training processes
(ranks, concurrent runs) can share one directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import Tensor

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_SUFFIX = ".safetensors"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600.0  # temporary files older than this are leftovers of a crashed writer


# ----------------------------------------------------------------- fingerprints


def file_digest(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def vision_fingerprint(tower: torch.nn.Module) -> str:
    """Hash of a vision tower: its class, config, and every parameter and buffer (name, dtype, shape, bytes).

    Any weight update changes it, so a cache written by a different tower is
    never read. Cost: one pass over the tower's weights (copied to CPU), done
    once per run.
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(type(tower).__qualname__.encode())
    cfg = getattr(tower, "config", None)
    if cfg is not None and hasattr(cfg, "to_json_string"):
        h.update(cfg.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, t in sorted(tower.state_dict(keep_vars=False).items()):
            flat = t.detach().reshape(-1).contiguous()  # [numel]
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(flat.view(torch.uint8).cpu().numpy().tobytes())  # [numel * itemsize]
    return h.hexdigest()


def processor_fingerprint(processor: Any) -> str:
    """Hash of what a processor does to frames before the tower (family + patching spec)."""
    spec = getattr(processor, "spec", None)
    payload = {
        "family": getattr(processor, "family", type(processor).__name__),
        "spec": dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else repr(spec),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


# ------------------------------------------------------------- (de)serialising


def _flatten(value: Any, prefix: str, out: dict[str, Tensor]) -> Any:
    """Tensors of a nested tuple/list into ``out``; returns a JSON tree describing the nesting."""
    if isinstance(value, Tensor):
        out[prefix] = value.detach().to("cpu", copy=True).contiguous()  # own storage: split views share memory
        return {"t": prefix}
    if isinstance(value, (tuple, list)):
        return {"seq": type(value).__name__, "items": [_flatten(v, f"{prefix}.{i}", out) for i, v in enumerate(value)]}
    if value is None:
        return {"none": True}
    raise TypeError(f"cannot cache a {type(value).__name__} in a vision output (at {prefix})")


def _unflatten(tree: dict, tensors: dict[str, Tensor]) -> Any:
    if "t" in tree:
        return tensors[tree["t"]]
    if tree.get("none"):
        return None
    items = [_unflatten(t, tensors) for t in tree["items"]]
    return tuple(items) if tree["seq"] == "tuple" else items


def _output_class(qualname: str) -> type:
    module, _, name = qualname.rpartition(".")
    if not module.startswith("transformers."):
        raise ValueError(f"refusing to load vision-output class {qualname!r} (not from transformers)")
    return getattr(importlib.import_module(module), name)


def serialize_vision(vision: dict[str, Any]) -> tuple[dict[str, Tensor], dict]:
    """``{modality: ModelOutput}`` -> (flat CPU tensors, JSON structure). ``last_hidden_state`` is dropped.

    The language model consumes only the merged embeddings (``pooler_output``,
    and e.g. ``deepstack_features`` for Qwen3-VL); the tower's pre-merge hidden
    states are several times larger and unused, so they are not stored.
    """
    tensors: dict[str, Tensor] = {}
    structure: dict[str, Any] = {}
    for modality, outp in vision.items():
        cls = type(outp)
        fields = {}
        for name, val in outp.items():
            if name == "last_hidden_state":
                continue
            fields[name] = _flatten(val, f"{modality}.{name}", tensors)
        structure[modality] = {"cls": f"{cls.__module__}.{cls.__qualname__}", "fields": fields}
    return tensors, structure


def deserialize_vision(tensors: dict[str, Tensor], structure: dict) -> dict[str, Any]:
    """Inverse of :func:`serialize_vision`."""
    out = {}
    for modality, spec in structure.items():
        cls = _output_class(spec["cls"])
        out[modality] = cls(**{name: _unflatten(tree, tensors) for name, tree in spec["fields"].items()})
    return out


# ----------------------------------------------------------------------- cache


@dataclass
class CacheStats:
    """Counters of one process's use of a :class:`VideoEmbeddingCache`."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    uncacheable: int = 0  # prompts without a video path, or with an unnamed frame transform
    bad_files: int = 0  # entries that failed to load (deleted)


class VideoEmbeddingCache:
    """Video embeddings on disk, keyed by content + sampling + variant + processor + vision weights.

    Args:
        root: cache directory (created); may be shared by several processes.
        max_bytes: size bound of the stored entries; least recently used entries
            are evicted after each write until the total fits.
        vision_fp: :func:`vision_fingerprint` of the frozen tower.
        processor_fp: :func:`processor_fingerprint` of the processor.

    Use :meth:`for_model` to build one from a loaded model and processor, and
    :meth:`encode` as a drop-in for ``vlm.encode_vision(prompt)``.
    """

    def __init__(self, root: str | Path, max_bytes: int, vision_fp: str, processor_fp: str = "") -> None:
        if max_bytes <= 0:
            raise ValueError(f"VideoEmbeddingCache: max_bytes must be > 0, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.vision_fp, self.processor_fp = vision_fp, processor_fp
        self.emb_dir = self.root / "emb"
        self.hash_dir = self.root / "hashes"
        self.emb_dir.mkdir(parents=True, exist_ok=True)
        self.hash_dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.root / ".lock"))
        self._digests: dict[tuple[str, int, int], str] = {}
        self._mutex = threading.Lock()  # the in-memory state; the file lock covers the directory
        self._last_ns = 0
        self.stats = CacheStats()

    @classmethod
    def for_model(cls, root: str | Path, max_gb: float, vlm, processor) -> "VideoEmbeddingCache":
        """A cache for ``vlm``'s (frozen) vision tower and ``processor``; fingerprints computed here."""
        tower = vlm.vision_tower()
        if tower is None:
            raise ValueError(f"{type(vlm.model).__name__} has no vision tower to cache the outputs of")
        return cls(root, int(max_gb * 1024**3), vision_fingerprint(tower), processor_fingerprint(processor))

    # ------------------------------------------------------------------- keys
    def content_hash(self, path: str | Path) -> str:
        """SHA-256 of the file, computed once per (path, mtime, size) and remembered on disk."""
        p = Path(path).resolve()
        st = p.stat()
        ident = (str(p), st.st_mtime_ns, st.st_size)
        with self._mutex:
            if ident in self._digests:
                return self._digests[ident]
        memo = self.hash_dir / (hashlib.sha1("|".join(map(str, ident)).encode()).hexdigest() + ".txt")
        digest = None
        try:
            text = memo.read_text().strip()
            digest = text if len(text) == 64 else None
        except OSError:
            pass
        if digest is None:
            digest = file_digest(p)
            self._atomic_write_text(memo, digest)
        with self._mutex:
            self._digests[ident] = digest
        return digest

    def key(self, video: str | Path, sampling: Any, variant: str = "") -> str:
        """The entry key of ``video`` sampled with ``sampling`` (a VideoSampling, dict or JSON string)."""
        if hasattr(sampling, "model_dump"):
            sampling = sampling.model_dump(mode="json")
        elif isinstance(sampling, str):
            sampling = json.loads(sampling)
        payload = {
            "format": FORMAT_VERSION,
            "video": self.content_hash(video),
            "sampling": sampling,
            "variant": variant,
            "processor": self.processor_fp,
            "vision": self.vision_fp,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.emb_dir / key[:2] / f"{key}{_SUFFIX}"

    # ---------------------------------------------------------------- get/put
    def get(self, key: str, device: torch.device | str = "cpu", grid_thw: Tensor | None = None) -> dict | None:
        """The cached vision output for ``key`` on ``device``, or None (miss, bad file, grid mismatch)."""
        path = self.path(key)
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            structure = json.loads(meta["structure"])
            if grid_thw is not None and json.loads(meta.get("grid_thw", "null")) != grid_thw.tolist():
                log.warning("embedding cache %s: stored grid %s != prompt grid %s; recomputing",
                            path.name, meta.get("grid_thw"), grid_thw.tolist())
                return None
            vision = deserialize_vision(tensors, structure)
        except FileNotFoundError:
            return None
        except (SafetensorError, OSError, KeyError, ValueError, TypeError) as e:
            log.warning("embedding cache: dropping unreadable entry %s (%s)", path, e)
            self.stats.bad_files += 1
            path.unlink(missing_ok=True)
            return None
        self._touch(path)
        return vision

    def put(self, key: str, vision: dict, meta: dict[str, str] | None = None) -> bool:
        """Store ``vision`` under ``key`` (atomic), then evict LRU entries beyond the bound; False if too large."""
        tensors, structure = serialize_vision(vision)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if size > self.max_bytes:
            log.warning("embedding cache: entry of %d bytes exceeds the bound of %d bytes; not stored", size,
                        self.max_bytes)
            return False
        metadata = {"structure": json.dumps(structure), "format": str(FORMAT_VERSION), **(meta or {})}
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_TMP_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
        try:
            save_file(tensors, str(tmp), metadata=metadata)
            self._touch(tmp)
            os.replace(tmp, path)  # atomic: readers see the old file, no file, or the whole new one
        finally:
            tmp.unlink(missing_ok=True)
        self.stats.writes += 1
        with self._lock:
            self._evict()
        return True

    def encode(self, vlm, prompt) -> dict:
        """``vlm.encode_vision(prompt)`` through the cache (a miss computes and stores it).

        The prompt must carry ``meta["video"]`` and ``meta["sampling"]`` (set by
        :class:`reelrl.data.prompts.PromptEncoder`); otherwise, when it was
        built with an unnamed frame transform, or when it holds extra images
        (the key names the video only), the tower runs and nothing is stored.
        """
        meta = prompt.meta
        if ("video" not in meta or "sampling" not in meta or meta.get("unnamed_transform")
                or "pixel_values" in prompt.vision_inputs):  # extra images (VideoRow.images): keyed on the video only
            self.stats.uncacheable += 1
            return vlm.encode_vision(prompt)
        grid = prompt.vision_inputs["video_grid_thw"].cpu()  # [1, 3]
        try:
            key = self.key(meta["video"], meta["sampling"], meta.get("variant", ""))
        except OSError as e:  # the file vanished after decoding: nothing to key on
            log.warning("embedding cache: cannot hash %s (%s); not cached", meta["video"], e)
            self.stats.uncacheable += 1
            return vlm.encode_vision(prompt)
        hit = self.get(key, vlm.device, grid)
        if hit is not None:
            self.stats.hits += 1
            return hit
        self.stats.misses += 1
        vision = vlm.encode_vision(prompt)
        self.put(key, vision, {"grid_thw": json.dumps(grid.tolist()), "video": str(meta["video"])})
        return vision

    # ------------------------------------------------------------- internals
    def entries(self) -> list[tuple[Path, int, int]]:
        """``(path, size, mtime_ns)`` of every stored entry."""
        out = []
        for sub in self.emb_dir.iterdir():
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                if not p.name.endswith(_SUFFIX):
                    continue
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                if p.name.startswith(_TMP_PREFIX):
                    if time.time() - st.st_mtime > _STALE_TMP_S:
                        p.unlink(missing_ok=True)
                    continue
                out.append((p, st.st_size, st.st_mtime_ns))
        return out

    def _evict(self) -> None:
        """Delete least recently used entries until the total fits (caller holds the file lock)."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for p, size, _ in sorted(entries, key=lambda e: (e[2], e[0].name)):
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            self.stats.evictions += 1

    def _touch(self, path: Path) -> None:
        """Mark ``path`` as just used (strictly increasing within this process: coarse fs clocks tie)."""
        with self._mutex:
            now = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = now
        try:
            os.utime(path, ns=(now, now))
        except FileNotFoundError:
            pass

    @staticmethod
    def _atomic_write_text(path: Path, text: str) -> None:
        tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as e:
            log.debug("embedding cache: could not remember a file hash (%s)", e)
        finally:
            tmp.unlink(missing_ok=True)
