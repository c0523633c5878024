"""Machine-readable outputs: JSON Lines, CSV, Parquet. Never overwrite without being told to."""

from __future__ import annotations

import json
import math
import os
import shutil
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


# json.dumps with options builds a new encoder per call: one line per connection reuses these.
# The strict one refuses NaN and infinities, so a record without any (nearly all) is encoded
# as it is, with no cleaned copy made first.
_encode_strict = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
_encode = json.JSONEncoder(ensure_ascii=False).encode


def json_line(rec: dict) -> str:
    try:
        return _encode_strict(rec)
    except ValueError:
        pass
    # NaN (pandas' missing value) is no JSON: null instead
    return _encode({k: None if isinstance(v, float) and math.isnan(v) else v
                    for k, v in rec.items()})


def _flat(df):
    """Lists become JSON text, so CSV and Parquet hold one plain value per cell."""
    out = df.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, (list, dict))).any():
            out[col] = out[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    return out


def publish(tmp: str, path: str, force: bool) -> None:
    """Move a finished temporary file (from ``temp_beside``) into place; without force, never
    over an existing file: os.link fails if ``path`` appeared since the start, so there is no
    check-then-write race. ``tmp`` is gone afterwards, whatever happened."""
    try:
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: exclusive creation, then copy
                _copy_new(tmp, path)
    except FileExistsError:
        raise OutputExists(f"{path}: already exists (use --force to overwrite)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _copy_new(src: str, path: str) -> None:
    with open(src, "rb") as fin, open(path, "xb") as fout:
        try:
            shutil.copyfileobj(fin, fout)
        except BaseException:
            os.unlink(path)  # (ours: created exclusively above)
            raise


def temp_beside(path: str, suffix: str = "") -> str:
    """A new empty file in ``path``'s directory (so that publishing it is a rename or a link,
    never a copy across file systems), with the permissions a plain open would have given."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rstscope-", suffix=suffix,
                                   dir=os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
    os.close(fd)
    mask = os.umask(0)  # (mkstemp makes it 0600; read the umask the only way there is)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    return tmp


def write_new(path: str, force: bool, write, suffix: str = "") -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then publish it there.
    On any failure, or an interruption, nothing is left behind and ``path`` is untouched."""
    tmp = temp_beside(path, suffix)
    try:
        write(tmp)
    except BaseException:
        os.unlink(tmp)
        raise
    publish(tmp, path, force)


def create_new(path: str, force: bool):
    """A binary file open for writing at ``path``, published at once (for a stream written as
    it comes, as ``live -w``): created beside and linked into place, so an existing file is
    never clobbered without force (and replaced atomically with it), with no race."""
    tmp = temp_beside(path)
    try:
        f = open(tmp, "wb")  # noqa: SIM115 - the caller closes it
    except BaseException:
        os.unlink(tmp)
        raise
    try:
        publish(tmp, path, force)  # (the open file keeps its inode: now ``path``'s)
    except BaseException:
        f.close()
        raise
    return f


def write_csv(df, path: str, force: bool = False, flat: bool = False) -> None:
    """`-` writes to standard output. ``flat``: ``df`` holds no lists already (a columns
    batch's ``frame(flat=True)``), so no cell is looked at again."""
    if not flat:
        df = _flat(df)
    if path == "-":
        df.to_csv(sys.stdout, index=False)
        return
    write_new(path, force, lambda tmp: df.to_csv(tmp, index=False), ".csv")


def write_parquet(df, path: str, force: bool = False, flat: bool = False) -> None:
    if path == "-":
        raise UsageError("--parquet needs a file name, not -")
    if not flat:
        df = _flat(df)
    write_new(path, force, lambda tmp: df.to_parquet(tmp, index=False), ".parquet")
