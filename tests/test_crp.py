"""CRP: concept-conditional heatmaps against the masked-model oracle (tests/lrp_oracle.py
with the layer's relevance masked to one channel), shares, and the errors."""
import pytest
import torch
from conftest import assert_untouched, snapshot
from lrp_oracle import SEEN, oracle_lrp
from test_lrp import ORACLE_TOLERANCE, _double_with_random_batchnorms, _rel, _Tiny

import deconvviz as dv
from deconvviz.engine.catalogue.lrp import COMPOSITES


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    return _double_with_random_batchnorms(_Tiny())


SPEC = dict(first="flat", conv="zplus", linear="epsilon", epsilon=1e-6, stabilizer=1e-6,
            gamma=0.25)


def test_each_concept_equals_the_masked_model_oracle(tiny):
    assert COMPOSITES[0].name == "lrp" and COMPOSITES[0].conv == SPEC["conv"]
    before = snapshot(tiny)
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(4))
    result = dv.crp(tiny, x, layer="stem", target=1)
    assert result.concepts == list(range(6)) and result.heatmaps.shape == (2, 6, 3, 12, 12)
    for k, channel in enumerate(result.concepts):
        oracle = oracle_lrp(tiny, x, SPEC, target=1, mask=(tiny.stem, channel))
        assert oracle.abs().max() > 0
        assert _rel(result.heatmaps[:, k], oracle) <= ORACLE_TOLERANCE, channel
    # every path passes the stem: the concepts' heatmaps add up to the class's
    SEEN.clear()
    full = oracle_lrp(tiny, x, SPEC, target=1, mask=(tiny.stem, None))
    assert _rel(result.heatmaps.sum(1), full) <= ORACLE_TOLERANCE
    # each concept's relevance at the layer, and its share of the layer's absolute relevance
    at_layer = SEEN[0].sum((2, 3))
    assert _rel(result.relevance, at_layer) <= ORACLE_TOLERANCE
    assert _rel(result.share, at_layer / at_layer.abs().sum(1, keepdim=True)) <= 1e-12
    assert_untouched(tiny, before)


def test_top_concepts_are_the_most_relevant_and_bad_input_is_refused(tiny):
    x = torch.randn(1, 3, 12, 12, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(5))
    every = dv.crp(tiny, x, layer="block")
    top = dv.crp(tiny, x, layer="block", top=2)
    order = every.share[0].argsort(descending=True)[:2].tolist()
    assert top.concepts == order
    assert _rel(top.heatmaps[0, 0], every.heatmaps[0, order[0]]) <= ORACLE_TOLERANCE
    # a projector keeps its own LRP method
    own = dv.crp(dv.Projector(tiny, method="lrp_epsilon"), x, layer="block", features=[0, 1])
    assert own.method == "lrp_epsilon"
    assert _rel(own.heatmaps, every.heatmaps[:, :2]) > 1e-3  # not lrp's
    with pytest.raises(dv.ArgumentError, match="channels 0..5"):
        dv.crp(tiny, x, layer="block", features=[6])
    with pytest.raises(dv.ArgumentError, match="LRP method"):
        dv.crp(tiny, x, layer="block", method="guided")
