"""benchmarks/gpu.py without a GPU: it parses its arguments and, without CUDA, exits with a
message (nothing measured), cheaply."""
import importlib.util
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_bench",
                                                  os.path.join(ROOT, "benchmarks", "gpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_parses_its_tables(bench, capsys):
    assert bench.parse(["--tables", "agree,occlusion"]).tables == "agree,occlusion"
    with pytest.raises(SystemExit) as stop:
        bench.parse(["--tables", "agree,speedz"])
    assert stop.value.code == 2 and "speedz" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would run")
def test_without_cuda_it_says_so_and_measures_nothing(bench):
    with pytest.raises(SystemExit) as stop:
        bench.main([])
    assert "no CUDA GPU here" in str(stop.value.code)
    with pytest.raises(SystemExit) as stop:
        bench.main(["--device", "cpu"])  # a CPU measurement would mislead: only --small
    assert "--small" in str(stop.value.code)
