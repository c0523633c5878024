"""The benchmark's peers: the commands that do what ``rstscope analyze`` does, by other tools.

- tshark ``-q -z conv,tcp`` (Wireshark's TCP conversations table) and ``tcptrace -n -l`` (per
  connection statistics), from the system's packages when installed;
- NFStream (``NFStreamer(source=F).to_pandas()``: flows with their features, as a table). It is
  no dependency of rstscope, so it lives in a virtual environment of the benchmark's own,
  ``bench-data/peers-venv``, created on first use; if that fails the benchmark says so in one
  line and goes on without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

NFSTREAM_CODE = ("import sys\nfrom nfstream import NFStreamer\n"
                 "NFStreamer(source=sys.argv[1]).to_pandas()\n")
INSTALL_TIMEOUT = 900  # s: a first install builds nothing (wheels), but downloads ~100 MB


def _imports(py: Path) -> bool:
    try:
        return subprocess.run([str(py), "-c", "import nfstream"], capture_output=True,
                              timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def nfstream_python(data: Path, install: bool = True) -> str | None:
    """The interpreter of the peers' venv once NFStream imports there (installed if missing);
    None (and one line on stdout) if it cannot be had."""
    venv = data / "peers-venv"
    py = venv / "bin" / "python"
    if py.exists() and _imports(py):
        return str(py)
    if not install:
        print("  nfstream: not installed (bench-data/peers-venv), skipped")
        return None
    print(f"installing NFStream in {venv} (once) ...", end=" ", flush=True)
    base = shutil.which("python3") or sys.executable
    steps = ([] if py.exists() else [[base, "-m", "venv", str(venv)]]) + [
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "nfstream"]]
    for cmd in steps:
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"failed ({e}); nfstream skipped")
            return None
        if run.returncode != 0:
            why = (run.stderr.strip().splitlines() or ["?"])[-1]
            print(f"failed ({why[:160]}); nfstream skipped")
            return None
    if not _imports(py):
        print("installed, but it does not import; nfstream skipped")
        return None
    print("done")
    return str(py)


def commands(path: str, nfstream_py: str | None) -> dict[str, list[str] | None]:
    """Each peer's command on ``path`` (None: the tool is missing)."""
    return {
        "tshark": ["tshark", "-q", "-z", "conv,tcp", "-r", path] if shutil.which("tshark")
        else None,
        "tcptrace": ["tcptrace", "-n", "-l", path] if shutil.which("tcptrace") else None,
        "nfstream": [nfstream_py, "-c", NFSTREAM_CODE, path] if nfstream_py else None,
    }
