"""Machine-readable outputs: JSON Lines, CSV, Parquet. Never overwrite without being told to."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from analyzer.errors import OutputExists, UsageError


def check_writable(path: str, force: bool) -> None:
    if path == "-":
        return
    p = Path(path)
    if p.exists() and not force:
        raise OutputExists(f"{path}: already exists (use --force to overwrite)")
    if not p.parent.exists():
        raise UsageError(f"{path}: directory {p.parent} does not exist")


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


def write_csv(df, path: str) -> None:
    _flat(df).to_csv(path, index=False)


def write_parquet(df, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    _flat(df).to_parquet(tmp, index=False)
    os.replace(tmp, path)
