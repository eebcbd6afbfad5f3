"""Snapshots on disk: one ``.npz`` holding the snapshot's arrays and a JSON
header. No pickles, so loading a file never runs code from it."""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from fasthost.export.snapshot import HIST_ROW_DTYPE, THREAD_DTYPE, THREAD_TARGET_DTYPE, Snapshot

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load", "save"]

FORMAT_NAME = "fasthost-snapshot"
FORMAT_VERSION = 1

_ARRAYS = {
    "threads": THREAD_DTYPE,
    "results": np.dtype(np.uint64),
    "thread_targets": THREAD_TARGET_DTYPE,
    "hist_rows": HIST_ROW_DTYPE,
    "hist_counts": np.dtype(np.uint64),
    "symbol_addresses": np.dtype(np.uint64),
}


def save(snapshot: Snapshot, path: str | os.PathLike[str]) -> None:
    """Writes ``snapshot`` to ``path`` (``.npz``; the name is kept as
    given). Raises ``OSError`` when it cannot be written."""
    symbols = snapshot.symbols
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "meta": snapshot.meta}
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            header=np.array(json.dumps(header)),
            threads=snapshot.threads,
            results=snapshot.results,
            thread_targets=snapshot.thread_targets,
            hist_rows=snapshot.hist_rows,
            hist_counts=snapshot.hist_counts,
            symbol_addresses=np.array(list(symbols), dtype=np.uint64),
            symbol_names=np.array(list(symbols.values()), dtype=str),
        )


def load(path: str | os.PathLike[str]) -> Snapshot:
    """Reads a snapshot written by :meth:`Snapshot.save`.

    Raises ``FileNotFoundError``/``OSError`` when the file cannot be read
    and ``ValueError``, saying what is wrong, for a file that is truncated,
    not a fasthost snapshot, from a newer fasthost, or inconsistent."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as exc:
        raise ValueError(f"{name}: not a fasthost snapshot (not a readable .npz file: {exc})") from None
    return _from_arrays(name, arrays)


def _from_arrays(name: str, arrays: dict[str, np.ndarray]) -> Snapshot:
    def fail(why: str) -> ValueError:
        return ValueError(f"{name}: {why}")

    if not isinstance(arrays.get("header"), np.ndarray):
        raise fail("not a fasthost snapshot (no header)")
    try:
        header = json.loads(str(arrays["header"]))
    except (ValueError, TypeError):
        raise fail("not a fasthost snapshot (unreadable header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise fail("not a fasthost snapshot (the header names another format)")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise fail(f"bad format version {version!r}")
    if version > FORMAT_VERSION:
        raise fail(f"written by a newer fasthost (format {version}; this one reads up to {FORMAT_VERSION}): upgrade")
    meta = header.get("meta")
    if not isinstance(meta, dict) or meta.get("precision") not in range(1, 9):
        raise fail("bad header: no valid precision")

    for key, dtype in _ARRAYS.items():
        if key not in arrays:
            raise fail(f"incomplete snapshot: no {key!r} array")
        if not isinstance(arrays[key], np.ndarray):
            raise fail(f"the {key!r} member is not a numpy array")
        if arrays[key].dtype != dtype:
            raise fail(f"the {key!r} array has dtype {arrays[key].dtype}, expected {dtype}")
    threads, results, pairs = arrays["threads"], arrays["results"], arrays["thread_targets"]
    rows, counts = arrays["hist_rows"], arrays["hist_counts"]
    precision = int(meta["precision"])
    _require(threads.ndim == 1 and results.shape == (len(threads), 4, 7), fail, "threads and results disagree")
    _require(pairs.ndim == 1 and _indexes_ok(pairs["thread"], len(threads)), fail, "a target row names no thread")
    _require(counts.shape == (len(rows), 1 << precision), fail, "histogram rows do not match the precision")
    _require(rows.ndim == 1 and _indexes_ok(rows["thread"], len(threads)), fail, "a histogram row names no thread")
    _require(
        bool(((rows["target"] >= -1) & (rows["target"] < len(pairs))).all()), fail, "a histogram row names no target"
    )
    _require(bool(((rows["kind"] >= 0) & (rows["kind"] <= 3)).all()), fail, "unknown histogram kind")
    _require(bool(((rows["row"] >= 0) & (rows["row"] < 65 - precision)).all()), fail, "histogram row out of range")
    names = arrays.get("symbol_names", np.zeros(0, dtype=str))
    addresses = arrays["symbol_addresses"]
    _require(names.dtype.kind == "U" and names.shape == addresses.shape, fail, "bad symbol table")
    return Snapshot(
        threads=threads,
        results=results,
        thread_targets=pairs,
        hist_rows=rows,
        hist_counts=counts,
        symbols={int(a): str(n) for a, n in zip(addresses, names)},
        meta=meta,
    )


def _indexes_ok(index: np.ndarray, size: int) -> bool:
    return bool(((index >= 0) & (index < size)).all())


def _require(ok: bool, fail: Any, why: str) -> None:
    if not ok:
        raise fail(f"corrupt snapshot: {why}")
