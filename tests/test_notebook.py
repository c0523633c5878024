"""notebooks/teardown_tour.ipynb runs top to bottom (this venv's python as the kernel), with the
lab's captures and with an empty captures folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat not installed (pip install nbformat)")
nbclient = pytest.importorskip("nbclient", reason="nbclient not installed (pip install nbclient)")
pytest.importorskip("ipykernel", reason="ipykernel not installed (pip install ipykernel)")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "teardown_tour.ipynb"
KERNEL = "rstscope-test"
CELL_TIMEOUT = 300  # seconds per cell


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernelspec running this interpreter, found first on JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rstscope test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def execute(kernel: str, cwd: Path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.output_type == kind]


def test_notebook_is_built_from_build_tour():
    sys.path.insert(0, str(NOTEBOOK.parent))
    try:
        import build_tour
    finally:
        sys.path.pop(0)
    built = [c.source for c in build_tour.build().cells]
    assert [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells] == built


@pytest.mark.slow
def test_notebook_runs_on_the_lab_captures(kernel):
    nb = execute(kernel, NOTEBOOK.parent)  # run from notebooks/: it finds the repo root itself
    assert not outputs(nb, "error")
    n = len(list((ROOT / "captures").glob("*.pcap")))
    text = "".join(o.text for o in outputs(nb, "stream"))
    assert f"{n} captures in " in text
    if n:
        images = [o for o in outputs(nb, "display_data") if "image/png" in o.data]
        assert len(images) >= 2  # the overview and at least one ladder


@pytest.mark.slow
def test_notebook_tolerates_no_captures(kernel, tmp_path, monkeypatch):
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setenv("RSTSCOPE_CAPTURES", str(empty))
    nb = execute(kernel, ROOT)
    assert not outputs(nb, "error")
    text = "".join(o.text for o in outputs(nb, "stream"))
    assert "0 captures in" in text and "no captures yet" in text
