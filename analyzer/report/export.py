"""Machine-readable outputs: JSON Lines, CSV, Parquet. Never overwrite without being told to."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path

from analyzer.errors import OutputExists, UsageError


def check_writable(path: str, force: bool) -> None:
    """Refuse, before any work is done, an output that exists (unless forced) or cannot be made."""
    if path == "-":
        return
    p = Path(path)
    if p.exists() and not force:
        raise OutputExists(f"{path}: already exists (use --force to overwrite)")
    if not p.parent.exists():
        raise UsageError(f"{path}: directory {p.parent} does not exist")


def check_distinct(*paths: str | None) -> None:
    given = [p for p in paths if p and p != "-"]
    if len({os.path.realpath(p) for p in given}) != len(given):
        raise UsageError(f"two outputs would go to the same file: {', '.join(given)}")


def json_line(rec: dict) -> str:
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        return v

    return json.dumps({k: clean(v) for k, v in rec.items()}, ensure_ascii=False)


def _flat(df):
    """Lists become JSON text, so CSV and Parquet hold one plain value per cell."""
    out = df.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, (list, dict))).any():
            out[col] = out[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    return out


def _publish(tmp: str, path: str, force: bool) -> None:
    """Move a finished temporary file into place; without force, never over an existing file
    (os.link fails if `path` appeared since the start: no check-then-write race)."""
    try:
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise OutputExists(f"{path}: already exists (use --force to overwrite)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _temp_beside(path: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=".rstscope-", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    return tmp


def write_csv(df, path: str, force: bool = False) -> None:
    """`-` writes to standard output."""
    if path == "-":
        _flat(df).to_csv(sys.stdout, index=False)
        return
    tmp = _temp_beside(path)
    _flat(df).to_csv(tmp, index=False)
    _publish(tmp, path, force)


def write_parquet(df, path: str, force: bool = False) -> None:
    if path == "-":
        raise UsageError("--parquet needs a file name, not -")
    tmp = _temp_beside(path)
    _flat(df).to_parquet(tmp, index=False)
    _publish(tmp, path, force)
