"""The oracle's float32 decisions (tests/oracle.py), which the GPU tests lean on: given a
model's own ReLU masks and max-pool switches the oracle is unchanged; given others it follows
them; and ``undecided`` tells a tie (an input within ``tie`` of zero, or of its competitor,
relative to the call's largest input) from a real difference."""
import pytest
import torch
from oracle import oracle_project, record_decisions, rel_error, undecided
from torch import nn


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()).double().eval()


@pytest.mark.parametrize("method", ["deconvnet", "guided", "gradient"])
def test_given_its_own_decisions_the_oracle_is_unchanged(method):
    model = _model()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    own = record_decisions(model, x)
    assert [kind for kind, *_ in own] == ["relu", "pool", "relu"]
    plain = oracle_project(model, x, "4", [0, 2], method=method)
    given = oracle_project(model, x, "4", [0, 2], method=method, decisions=own)
    assert plain.abs().max() > 0 and rel_error(given, plain) <= 1e-12
    moved = [list(d) for d in own]
    moved[0][1] = 1 - moved[0][1]  # every mask of the first ReLU flipped
    other = oracle_project(model, x, "4", [0, 2], method=method, decisions=moved)
    assert rel_error(other, plain) > 1e-3  # the decisions are followed


def test_undecided_tells_a_tie_from_a_difference():
    relu_in = torch.tensor([1.0, -0.5, 1e-6, 0.3]).view(1, 1, 2, 2)
    pool_in = torch.tensor([1.0, 1.0 - 1e-6, 0.2, 0.0]).view(1, 1, 2, 2)
    mask = (relu_in > 0).double()
    reference = [("relu", mask, relu_in), ("pool", torch.tensor([[[[0]]]]), pool_in)]

    def ours(flip, switch):
        m = mask.clone().view(-1)
        m[flip] = 1 - m[flip]
        return [("relu", m.view(mask.shape), relu_in),
                ("pool", torch.tensor([[[[switch]]]]), pool_in)]
    assert undecided(ours(2, 1), reference, tie=1e-4) == []  # both within 1e-6 of the largest
    gap = pytest.approx  # the inputs are float32: their gaps to float32's rounding
    assert undecided(ours(2, 1), reference, tie=1e-7) == [(0, "relu", 1, gap(1e-6, rel=1e-3)),
                                                          (1, "pool", 1, gap(1e-6, rel=0.1))]
    assert undecided(ours(1, 2), reference, tie=1e-4) == [(0, "relu", 1, gap(0.5)),
                                                          (1, "pool", 1, gap(0.8))]
