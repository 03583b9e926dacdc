"""Exact by default on every device: the precision context sets the backends' flags for
deconvviz's own calls and gives the caller's back, also after an error (the flags can be set
without a GPU, so all of this runs on the CPU)."""
import os

import pytest
import torch
from conftest import EXAMPLES, invoke
from torch import nn

import deconvviz as dv
from deconvviz.engine import precision as precision_module
from deconvviz.engine.precision import backend_flags, computing, current_precision
from deconvviz.errors import UnknownPrecisionError


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3), nn.ReLU()).eval()


@pytest.fixture
def caller_flags():
    """The caller's settings: TF32 allowed everywhere, cuDNN's autotuner on; put back after."""
    saved = backend_flags()
    cudnn = torch.backends.cudnn
    torch.backends.cuda.matmul.allow_tf32 = True
    cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic = True, True, False
    yield backend_flags()
    precision_module._set(saved)


def exact_inside(flags):
    """Whether ``flags`` (backend_flags()) are the exact setting, in either interface."""
    if flags[0] == "new":
        return flags[1:] == ("ieee", "ieee", True, False)
    return flags[1:] == ("highest", False, False, True, False)


def test_exact_sets_float32_and_gives_the_callers_flags_back(caller_flags):
    assert not exact_inside(caller_flags)
    with computing() as name:
        assert name == "exact" and current_precision() == "exact"
        assert exact_inside(backend_flags())
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert backend_flags() == caller_flags and current_precision() is None
    with computing("tf32"):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.benchmark  # the caller's, left alone
    assert backend_flags() == caller_flags


def test_flags_come_back_after_an_error_in_a_projection(caller_flags):
    net = dv.Deconvnet(tiny())
    with pytest.raises(dv.ArgumentError):
        net.project(torch.randn(1, 3, 16, 16), "3", features=99)  # out of range
    assert backend_flags() == caller_flags
    with pytest.raises(KeyError), computing("exact"):
        raise KeyError("boom")
    assert backend_flags() == caller_flags


def test_projector_and_analyses_compute_inside_the_context(caller_flags, monkeypatch):
    """What the engine's recording and reverse pass see: exact by default, TF32 when asked,
    and a projector built inside an analysis inherits the analysis's precision."""
    seen = []
    from deconvviz.engine import projector

    real = projector.record_nodes
    monkeypatch.setattr(projector, "record_nodes",
                        lambda *a, **k: seen.append(backend_flags()) or real(*a, **k))
    model, x = tiny(), torch.randn(1, 3, 16, 16)
    dv.Deconvnet(model).project(x, "3", features=[0, 1])
    dv.Deconvnet(model, precision="tf32").project(x, "3", features=0)
    with computing("tf32"):
        dv.Gradient(model).project(x, "3", features=0)  # inherits tf32
        dv.Gradient(model, precision="exact").project(x, "3", features=0)  # its own
    assert [exact_inside(f) for f in seen] == [True, False, False, True]
    assert backend_flags() == caller_flags
    seen.clear()
    dv.attribute(model, x, method="guided", layer="3", features=1, precision="tf32")
    first, seen[:] = list(seen), []
    dv.attribute(model, x, method="guided", layer="3", features=1)
    # every recording of a call (the map's, the note's seed) at that call's precision
    assert first and not any(exact_inside(f) for f in first)
    assert seen and all(exact_inside(f) for f in seen)


def test_unknown_precision_names_the_choices():
    with pytest.raises(UnknownPrecisionError, match="exact, tf32"):
        dv.Deconvnet(tiny(), precision="bf16")
    with pytest.raises(ValueError, match="choose one of exact, tf32"):
        with computing("half"):
            pass
    done = invoke("show", "-m", "zfnet", "--weights", "none", "--layer", "conv1",
                            "--precision", "fp8", os.path.join(EXAMPLES, "chelsea.png"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "exact, tf32" in done.stderr


def test_scans_and_projections_record_precision_and_device(tmp_path):
    from deconvviz.data.zoo import Preprocessing

    prep = Preprocessing(resize_size=40, crop_size=32)
    photos = [os.path.join(EXAMPLES, "chelsea.png"), os.path.join(EXAMPLES, "rocket.jpg")]
    model = tiny()
    default = dv.scan(model, photos, layers=["3"], hits=1, progress=False, preprocessing=prep)
    fast = dv.scan(model, photos, layers=["3"], hits=1, progress=False, preprocessing=prep,
                   precision="tf32", out=tmp_path / "s.pt")
    assert (default.precision, default.device) == ("exact", "cpu")
    assert (fast.precision, dv.load_scan(tmp_path / "s.pt").precision) == ("tf32", "tf32")
    p = dv.project(model, photos[0], layer="3", features=[0], precision="tf32")
    # recorded as asked; the title does not claim TF32 on a CPU, whose arithmetic is exact
    assert (p.precision, p.device) == ("tf32", "cpu") and "TF32" not in p.title
    assert "exact" not in dv.project(model, photos[0], layer="3", features=[0]).title


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "conv"), reason="PyTorch < 2.9 has only "
                    "the legacy allow_tf32 flags")
def test_a_caller_of_the_new_interface_gets_it_back_and_no_mix():
    """PyTorch >= 2.9 refuses to read a mix of allow_tf32 and fp32_precision: a caller who
    set fp32_precision keeps exactly that, and deconvviz writes through the same interface."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = (matmul.fp32_precision, conv.fp32_precision)
    try:
        matmul.fp32_precision, conv.fp32_precision = "tf32", "tf32"
        with computing("exact"):
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved
    torch.backends.cudnn.allow_tf32  # noqa: B018  (readable again: no mix left behind)


def test_the_commands_precision_reaches_the_engine(tmp_path, monkeypatch):
    seen = []
    from deconvviz.engine import projector

    real = projector.record_nodes
    monkeypatch.setattr(projector, "record_nodes",
                        lambda *a, **k: seen.append(backend_flags()) or real(*a, **k))
    before = backend_flags()
    done = invoke("show", "-m", "zfnet", "--weights", "none", "--layer", "conv1",
                  "--features", "0", "--precision", "tf32", "--device", "cpu",
                  os.path.join(EXAMPLES, "chelsea.png"), "--out", tmp_path / "p.png")
    assert done.returncode == 0, done.stderr
    assert seen and not any(exact_inside(f) for f in seen)  # the API's default is exact
    assert backend_flags() == before
