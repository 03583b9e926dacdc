import os
import sys

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
sys.path.insert(0, os.path.dirname(__file__))  # the oracle

import deconvviz as dv  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "images")
_MODELS = {}


@pytest.fixture(autouse=True)
def _offline_torch_home(tmp_path, monkeypatch):
    """Every test gets an empty torch hub cache and no downloads."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)


def zoo_model(name):
    """A zoo model with random weights, built once per test session (tests never change it)."""
    if name not in _MODELS:
        torch.manual_seed(0)
        _MODELS[name] = dv.load_model(name, weights=None)
    return _MODELS[name]


@pytest.fixture
def chelsea():
    return os.path.join(EXAMPLES, "chelsea.png")


def snapshot(model):
    """Everything about a model a call must leave alone."""
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
    }


def assert_untouched(model, before):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not m._backward_hooks and not getattr(m, "_backward_pre_hooks", {})
    assert [m.training for m in model.modules()] == before["training"]
    after = model.state_dict()
    assert after.keys() == before["params"].keys()
    for k, v in before["params"].items():
        assert torch.equal(after[k], v), k
    assert all(p.grad is None for p in model.parameters())


class Completed:
    """What a command did, shaped like subprocess.CompletedProcess."""

    def __init__(self, result):
        self.returncode = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr


def invoke(*args, cwd=None):
    """Run ``deconvviz ARGS`` in this process (torch is imported once for the whole suite),
    in ``cwd``; exit codes, stdout and stderr are the command's own."""
    from click.testing import CliRunner

    from deconvviz.cli import cli

    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="deconvviz")
    finally:
        os.chdir(old)
    return Completed(result)
