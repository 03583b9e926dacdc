import contextlib
import os
import re
import subprocess
import sys
import tempfile

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
sys.path.insert(0, os.path.dirname(__file__))  # the oracle

import deconvviz as dv  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "images")
CHELSEA = os.path.join(EXAMPLES, "chelsea.png")
# The engine-and-oracle tests are parametrised over the whole registry: a newly registered
# model is tested. Tests of what sits above the engine (the cone against the full pass,
# Captum's methods, the paper's analyses) take one model per family (the first registered:
# zfnet, alexnet, vgg16, googlenet, resnet18, densenet121): a family's deeper members add
# depth, not new kinds of op.
ALL_MODELS = dv.list_models()
FAMILIES = list({re.sub(r"\d+$", "", name): name
                 for name in reversed(ALL_MODELS)}.values())[::-1]
# scripts/kernel_matrix.sh runs the agreement tests eight times, over one model per family
# (DECONVVIZ_TEST_ZOO=families): the kernels' arithmetic, not the architectures, is its topic.
ZOO = FAMILIES if os.environ.get("DECONVVIZ_TEST_ZOO") == "families" else ALL_MODELS
_MODELS = {}


@pytest.fixture(autouse=True)
def _offline_torch_home(tmp_path, monkeypatch):
    """Every test gets an empty torch hub cache and no downloads."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)


def _reuse_random_builds():
    """``load_model(name, weights=None)`` draws its weights with seed 0 every time (without
    touching the global random state), so a copy of an earlier draw is bit-identical to a
    new one and takes a tenth of the time (ZFNet: 62 M weights drawn twice, by the layers'
    own initialisation and then the paper's). The last three architectures are kept, and
    every one ``zoo_model`` holds (the same draw: load_model sets eval mode and its info
    again on the copy)."""
    import collections
    import copy

    from deconvviz.data.zoo import _api

    built = collections.OrderedDict()
    draw = _api._random

    def reuse(spec):
        if spec.name in _MODELS:
            return copy.deepcopy(_MODELS[spec.name])
        if spec.name not in built:
            built[spec.name] = draw(spec)
            if len(built) > 3:
                built.popitem(last=False)
        built.move_to_end(spec.name)
        return copy.deepcopy(built[spec.name])

    reuse.draw = draw  # test_zoo checks the draw itself
    _api._random = reuse


_reuse_random_builds()


def zoo_model(name):
    """A zoo model with random weights, built once per test session (tests never change it)."""
    if name not in _MODELS:
        torch.manual_seed(0)
        _MODELS[name] = dv.load_model(name, weights=None)
    return _MODELS[name]


# Training: ZFNet on 56-pixel crops of 64-pixel shapes (``shapes``): small enough for a CPU,
# big enough for conv5.
SMALL = dict(batch_size=8, resize_size=64, crop_size=56, workers=0, progress=False)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A small synthetic image folder of coloured shapes: train/ (three classes, 48 images, six
    batches of ``SMALL``) and val/ (12)."""
    from deconvviz.data.synthetic import make_shapes

    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root / "train", per_class=16, size=64, seed=0)
    make_shapes(root / "val", per_class=4, size=64, seed=1)
    return root


def _memory_to_spare():
    """/dev/shm when this machine has a tmpfs there and 12 GiB of memory available, else None
    (files there hold memory until removed: on a machine short of it, the disk is safer)."""
    try:
        with open("/proc/meminfo") as handle:
            info = dict(line.split(":", 1) for line in handle)
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    return "/dev/shm" if os.path.isdir("/dev/shm") and available > 12 * 2**30 else None


@contextlib.contextmanager
def scratch_folder(fallback):
    """A new folder for training runs (ZFNet's checkpoints are 250 MB each, its training
    state 500 MB; at most ~3 GB at once): in memory (/dev/shm) while there is memory to
    spare, else under ``fallback``; removed afterwards, also after a failure. Written to
    disk, the training tests' ~9 GB of checkpoints took a sixth of their CPU time."""
    import pathlib
    import shutil

    folder = pathlib.Path(tempfile.mkdtemp(prefix="deconvviz-test-",
                                           dir=_memory_to_spare() or fallback))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def scratch(tmp_path):
    """``scratch_folder`` for one test."""
    with scratch_folder(tmp_path) as folder:
        yield folder


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


def cli_process(*args, cwd=None, timeout=300):
    """Run ``python -m deconvviz ARGS`` in a new process: for what only a process shows (the
    start-up, ``--debug``'s traceback, torchrun)."""
    return subprocess.run([sys.executable, "-m", "deconvviz", *[str(a) for a in args]],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def make_read_only(monkeypatch, folder):
    """Refuse writes into ``folder`` as a read-only mount does (root may write anywhere, so
    ``chmod`` cannot show it): deconvviz writes through ``tempfile.mkstemp``."""
    real_mkstemp = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if str(dir) == str(folder):
            raise OSError(30, "Read-only file system")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


@contextlib.contextmanager
def captured_outputs(module, index=None, detach=False):
    """Collect ``module``'s forward outputs (item ``index`` of a tuple) while inside; the
    hook is removed on the way out, also after an error."""
    outputs = []

    def hook(mod, inputs, output):
        out = output if index is None else output[index]
        outputs.append(out.detach().clone() if detach else out)

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)  # `make test` runs two workers (pytest -n 2): one core each


# The slowest test files first, each whole on one worker (`make test`: pytest -n 2 --dist
# loadfile --no-loadscope-reorder), so that the two workers finish together instead of one
# waiting on the last slow file. Measured with --durations=0; the rest keep their order.
SLOWEST_FIRST = ["test_training.py", "test_cams.py", "test_lrp.py", "test_notebooks.py",
                 "test_api_glossary.py", "test_scan.py",
                 "test_training_options.py", "test_deconvnet.py", "test_paper_analyses.py",
                 "test_attribution.py", "test_browser.py", "test_methods.py", "test_cli.py",
                 "test_cone.py", "test_scan_files.py", "test_atlas.py", "test_relevance_scan.py",
                 "test_cli_inputs.py", "test_layers.py", "test_own_models.py",
                 "test_modern_cnns.py", "test_zoo.py", "test_scan_distribution.py",
                 "test_explore.py", "test_scan_same_hits.py", "test_method_table.py",
                 "test_sanity_reuse.py", "test_channel_axes.py", "test_incremental.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.path)), len(rank)))
