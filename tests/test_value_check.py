"""How closely an atlas or a top-hits figure must find a scan's values again: 1e-3 of the
layer's strongest hit, looser where the scan's arithmetic (TF32) or decoder (nvJPEG) was not
the re-run's. Each bound is tested with a difference inside it and one outside."""
from types import SimpleNamespace

import pytest
import torch

from deconvviz.analyses.scan_result import Hit
from deconvviz.analyses.top_hits import (
    VALUE_CHECK,
    VALUE_CHECK_DECODER,
    VALUE_CHECK_TF32,
    check_hit_values,
    value_check,
)
from deconvviz.errors import ImageError


@pytest.mark.parametrize("precision,decoder,bound", [
    ("exact", "pillow", VALUE_CHECK), (None, "pillow", VALUE_CHECK),
    ("tf32", "pillow", VALUE_CHECK_TF32), ("exact", "nvjpeg", VALUE_CHECK_DECODER),
    ("tf32", "mixed", VALUE_CHECK_DECODER)])
def test_a_rerun_value_is_held_to_the_scans_own_bound(precision, decoder, bound):
    result = SimpleNamespace(precision=precision, decoder=decoder)
    assert value_check(result) == bound
    act = torch.zeros(1, 4, 3, 3)
    act[0, 2, 1, 2] = 0.5
    strongest = 2.0
    for inside in (0.5 + 0.9 * bound * strongest, 0.5 - 0.9 * bound * strongest):
        check_hit_values("a.jpg", "conv5", act, [(2, Hit(inside, "a.jpg", 1, 2))], strongest,
                         value_check(result))
    outside = 0.5 + 1.1 * bound * strongest
    with pytest.raises(ImageError, match=f"checked to {bound:g} of the layer's strongest"):
        check_hit_values("a.jpg", "conv5", act, [(2, Hit(outside, "a.jpg", 1, 2))], strongest,
                         value_check(result))


def test_the_bounds_grow_with_what_differs():
    assert VALUE_CHECK < VALUE_CHECK_TF32 < VALUE_CHECK_DECODER
