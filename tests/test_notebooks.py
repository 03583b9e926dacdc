"""Every example notebook runs top to bottom (outputs are stripped in git)."""
import os
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
NOTEBOOKS = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".ipynb"))


def test_there_are_the_five_notebooks():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    book = nbformat.read(os.path.join(EXAMPLES, name), as_version=4)
    assert all(not cell.get("outputs") for cell in book.cells if cell.cell_type == "code")
    start = time.perf_counter()
    nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": EXAMPLES}}).execute()
    print(f"{name}: {time.perf_counter() - start:.1f} s")
    images = [o for cell in book.cells if cell.cell_type == "code"
              for o in cell.outputs if "image/png" in o.get("data", {})]
    if name != "05_explorer.ipynb":  # the explorer's output is a widget
        assert images, "the notebook should show at least one figure"
