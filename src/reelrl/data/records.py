"""Reading published annotation files as ``(where, record)`` pairs, for importers and benchmark adapters.

One reader for the three layouts datasets are distributed in: a JSON list
(``.json`` and any other suffix), JSON Lines (``.jsonl``) and a Parquet table
(``.parquet``, read with pyarrow). ``where`` names the record for error
messages: ``file record i`` (JSON list), ``file:line`` (JSONL) or ``file row i``
(Parquet). Unreadable bytes, malformed JSON and a JSON file that is not a list
are a :class:`~reelrl.data.schema.DataError` naming the file (and line).
What a record must hold is the caller's to check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reelrl.data.schema import DataError, json_lines, read_text

__all__ = ["read_records"]


def read_records(path: Path) -> list[tuple[str, Any]]:
    """``(where, record)`` of a ``.json`` list, a ``.jsonl`` file or a ``.parquet`` table, in file order."""
    path = Path(path)
    if path.suffix == ".parquet":
        return _read_parquet(path)
    try:
        if path.suffix == ".jsonl":
            return [(f"{path}:{n}", r) for n, r in json_lines(path)]
        text = read_text(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return [(f"{path} record {i}", r) for i, r in enumerate(data)]


def _read_parquet(path: Path) -> list[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install 'reelrl[benchmarks]' or "
                        "pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError subclasses
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    return [(f"{path} row {i}", r) for i, r in enumerate(table.to_pylist())]
