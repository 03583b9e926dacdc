"""Every example notebook runs top to bottom (outputs are stripped in git).

The notebooks run two at a time, each in its own kernel with one torch thread: most of a
notebook's time is its kernel starting and importing torch, which one core does while the
other computes."""
import concurrent.futures
import os
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
NOTEBOOKS = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".ipynb"))


def _execute(name):
    book = nbformat.read(os.path.join(EXAMPLES, name), as_version=4)
    assert all(not cell.get("outputs") for cell in book.cells if cell.cell_type == "code")
    start = time.perf_counter()
    nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": EXAMPLES}}).execute()
    return book, time.perf_counter() - start


@pytest.fixture(scope="module")
def executed():
    """Each notebook's run, started at once, two at a time: name -> future (book, seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        # the kernels inherit these when they start
        patch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("MKL_NUM_THREADS", "1")
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(_execute, name) for name in NOTEBOOKS}
            yield futures


def test_the_notebooks_are_the_documented_ones():
    # Each is run below; this names them, so one that is added or lost is noticed.
    assert NOTEBOOKS == ["01_quickstart.ipynb", "02_zoo_tour.ipynb", "03_scan_and_fig2.ipynb",
                         "04_your_own_model.ipynb", "05_explorer.ipynb",
                         "06_methods_and_sanity.ipynb", "07_paper_analyses.ipynb",
                         "08_relevance.ipynb", "09_feature_vis.ipynb",
                         "10_evaluation.ipynb", "11_transformers.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, executed):
    book, seconds = executed[name].result()  # re-raises the notebook's error, if any
    print(f"{name}: {seconds:.1f} s")
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code), "every code cell ran"
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    images = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    if name != "05_explorer.ipynb":  # the explorer's output is a widget
        assert images, "the notebook should show at least one figure"
