"""Each tolerance of the metrics' tests, with a case inside it and one outside: the 1e-6
agreement with a peer, the 1e-12 agreement of the incremental steps, the two standard
errors of a random map's pointing game (the pointing game's pixel tolerance:
tests/test_metrics_localisation.py)."""
import pytest
import torch
from metrics_cases import RTOL, Net, case, net_inputs, quantus_call, relative, score

from deconvviz.analyses.evaluation import Inputs, compute

quantus = pytest.importorskip("quantus")


@pytest.mark.parametrize("shift,inside", [(1e-8, True), (1e-4, False)])
def test_peer_tolerance_sees_a_changed_model(shift, inside):
    # Quantus's pixel flipping on the model; deconvviz's on the model with its logits'
    # bias for the target moved by `shift`: 1e-8 stays inside RTOL, 1e-4 does not
    inputs = case()
    theirs = quantus_call(quantus.PixelFlipping(features_in_step=48, perturb_baseline="black",
                                                normalise=False, disable_warnings=True),
                          inputs, softmax=True)
    with torch.no_grad():
        inputs.model[-1].bias[inputs.targets] += shift
    ours = score("pixel_flipping", inputs, steps=9, baseline="black")
    assert (relative(ours.curve[:, 1:], theirs) < RTOL) is inside


@pytest.mark.parametrize("change,inside", [(0.0, True), (1e-9, False)])
def test_incremental_tolerance_sees_a_changed_baseline(change, inside):
    torch.manual_seed(0)
    model = Net().double().eval()
    inputs = net_inputs(model, n=2)
    plain = compute("region_perturbation_morf", inputs, patch_size=3, regions=4,
                    baseline=0.0, incremental=False)
    chain = compute("region_perturbation_morf", inputs, patch_size=3, regions=4,
                    baseline=change, incremental=True)
    scale = plain.curve.abs().max()
    assert bool((chain.curve - plain.curve).abs().max() <= 1e-12 * scale) is inside


@pytest.mark.parametrize("bias,inside", [(0.0, True), (0.02, False)])
def test_two_standard_errors_see_a_map_drawn_to_the_box(bias, inside):
    # random maps, or random maps with the box raised by `bias` (which wins the maximum a
    # little more often than the box's share)
    g = torch.Generator().manual_seed(5)
    n, size = 400, 20
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, 5:10, 5:10] = True
    maps = torch.rand(n, 1, size, size, generator=g, dtype=torch.float64)
    maps = maps + bias * masks[:, None]
    inputs = Inputs(torch.nn.Identity(), torch.zeros(n, 3, size, size), maps,
                    torch.zeros(n, dtype=torch.long), masks=masks)
    hits = compute("pointing_game", inputs, tolerance=1).per_image
    share = 25 / 400
    se = (share * (1 - share) / n) ** 0.5
    assert bool(abs(hits.mean() - share) < 2 * se) is inside
