"""Durable files: fsync, a checksum manifest written last, and what a failed write says.

A checkpoint directory is complete once its ``manifest.json`` exists: the
manifest lists every file with its size and (``checksums=True``) its SHA-256,
and it is written, and fsynced with every file and directory, before the
directory is renamed into place. :func:`verify_manifest` re-reads it at
resume and says, naming the file, why a checkpoint is damaged (what a power
loss, a full disk or a copy gone wrong leaves behind).

:func:`explain_write_error` turns what the writers raise on a full disk or a
permission problem (``OSError``, torch's ``RuntimeError: unexpected pos``,
DCP's ``CheckpointException``, which is a ``BaseException`` holding each
rank's exception) into one sentence naming the path and the cause.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or no intact checkpoint could be resumed from."""


def fsync_path(path: Path) -> None:
    """fsync one file or directory (directories: so that the names in it are durable)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _digests(paths: list[Path]) -> list[str]:
    """SHA-256 of each file, several at a time (hashlib releases the GIL on large buffers)."""
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(paths)))) as pool:
        return list(pool.map(sha256, paths))


def write_manifest(root: Path, checksums: bool = True) -> Path:
    """fsync every file under ``root``, then write and fsync ``root/manifest.json`` and every directory."""
    files = _files(root)
    for p in files:
        fsync_path(p)
    digests = _digests(files) if checksums else [None] * len(files)
    entries = {p.relative_to(root).as_posix(): {"size": p.stat().st_size, **({"sha256": d} if d else {})}
               for p, d in zip(files, digests)}
    out = root / MANIFEST
    with open(out, "w") as f:
        json.dump({"format": 1, "files": entries}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for d in sorted({p.parent for p in files} | {root}, key=lambda p: len(p.parts), reverse=True):
        fsync_path(d)
    return out


def verify_manifest(root: Path) -> str | None:
    """None when every file the manifest lists is present with its size and checksum; else why not, naming the file.

    Sizes are checked for every file first (cheap), then the checksums.
    """
    path = root / MANIFEST
    if not path.is_file():
        return (f"{path} is missing (it is written last, so the checkpoint is incomplete, or it was written by a "
                "reelrl without manifests)")
    try:
        entries = json.loads(path.read_text())["files"]
        sizes = {rel: int(e["size"]) for rel, e in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{path} is unreadable ({type(e).__name__}: {e})"
    for rel, size in sizes.items():
        p = root / rel
        if not p.is_file():
            return f"{p} is missing"
        if (have := p.stat().st_size) != size:
            return f"{p} has {have} bytes, the manifest says {size} (truncated or partly written)"
    listed = [rel for rel, e in entries.items() if e.get("sha256")]
    for rel, have in zip(listed, _digests([root / rel for rel in listed])):
        if have != entries[rel]["sha256"]:
            return f"{root / rel} does not match its checksum (sha256 {have[:12]}..., the manifest says " \
                   f"{entries[rel]['sha256'][:12]}...): the file is corrupt"
    return None


def root_cause(e: BaseException) -> BaseException:
    """The exception under DCP's per-rank wrapper and ``raise ... from`` chains."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        inner = next(iter(failures.values()))
        return root_cause(inner[0] if isinstance(inner, tuple) else inner)
    if not isinstance(e, OSError) and isinstance(e.__cause__, BaseException):
        return root_cause(e.__cause__)
    return e


_SHORT_WRITE = ("unexpected pos", "failed writing", "iostream error", "No space left")


def _short_write(e: BaseException) -> bool:
    """Whether ``e`` or an exception it was raised while handling is a stream that stopped writing."""
    while e is not None:
        if any(t in str(e) for t in _SHORT_WRITE):
            return True
        e = e.__context__
    return False


def _free(path: Path) -> int | None:
    for p in [path, *path.parents]:
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def explain_write_error(e: BaseException, path: Path) -> str:
    """One sentence: which path could not be written and why (disk full, permission, read-only, other)."""
    cause = root_cause(e)
    where = Path(getattr(cause, "filename", None) or path)
    free = _free(Path(path))
    free_text = f"{free / 2**20:.0f} MiB free" if free is not None else "free space unknown"
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}: no space left on the device ({cause.strerror}; {free_text})"
    if isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: permission denied (check the owner and mode of the directory)"
    if isinstance(cause, OSError) and cause.errno == errno.EROFS:
        return f"{where}: the filesystem is read-only"
    if isinstance(cause, OSError):
        return f"{where}: {cause.strerror or cause}"
    text = f"{type(cause).__name__}: {cause}"
    if _short_write(cause) or (free is not None and free < 2**26):
        return f"{where}: the write stopped short ({text}); the disk is probably full ({free_text})"
    return f"{where}: {text}"
