"""ROAD: the batched noisy linear imputation against pytorch-grad-cam's sparse direct solve
(the paper's code), the metric against pytorch-grad-cam's ROAD, and Quantus 0.6's ROAD's
departures (an IndexError, a third of the pixels)."""
import numpy as np
import pytest
import torch
from metrics_cases import RTOL, case, quantus_call, relative, score

from deconvviz.analyses.evaluation import road as R
from deconvviz.errors import ArgumentError

road_gc = pytest.importorskip("pytorch_grad_cam.metrics.road")


@pytest.mark.parametrize("size,share", [(10, 0.3), (10, 0.9), (17, 0.5)])
def test_imputation_equals_grad_cams_sparse_solve(size, share):
    g = torch.Generator().manual_seed(size)
    image = torch.randn(3, size, size, generator=g)
    cam = torch.rand(size, size, generator=g)
    keep = (cam < np.percentile(cam.numpy(), 100 * (1 - share))).float()
    theirs = road_gc.NoisyLinearImputer(noise=0)(image, keep)  # float32, as it returns
    ours = R.impute(image.double()[None], (keep == 0)[None])[0]
    assert relative(ours, theirs) < RTOL
    # the removed pixels changed, the others did not
    assert torch.equal(ours[:, keep == 1], image.double()[:, keep == 1])


def test_imputed_pixel_is_its_neighbours_weighted_mean():
    # one removed pixel in a 3x3 image: (sum of 4 sides / 6 + sum of 4 corners / 12)
    image = torch.arange(9, dtype=torch.float64).view(1, 1, 3, 3) ** 2
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True
    side = (1 + 9 + 25 + 49) / 6
    corner = (0 + 4 + 36 + 64) / 12
    assert abs(float(R.impute(image, removed)[0, 0, 1, 1]) - (side + corner)) < 1e-12
    # at a corner, the neighbours outside the image are left out and the weights rescaled
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 0, 0] = True
    expected = (1 / 6 * 1 + 1 / 6 * 9 + 1 / 12 * 16) / (1 / 6 + 1 / 6 + 1 / 12)
    assert abs(float(R.impute(image, removed)[0, 0, 0, 0]) - expected) < 1e-12


def test_imputation_refuses_an_image_with_nothing_known():
    with pytest.raises(ArgumentError, match="known pixel"):
        R.impute(torch.zeros(1, 3, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool))


@pytest.mark.parametrize("how", ["morf", "lerf"])
def test_road_equals_grad_cams(how):
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    # 10x10: np.percentile(q) keeps exactly q % of 100 pixels (no ties), so grad-cam's
    # "percentile q kept" is deconvviz's "100 - q % removed"
    inputs = case(size=10, n=2, positive=True)
    kept = [80, 50, 20]
    ours = score(f"road_{how}", inputs, percentages=[100 - q for q in kept], noise=0.0,
                 output="probability")
    remove = RemoveMostRelevantFirst if how == "morf" else RemoveLeastRelevantFirst
    cams = inputs.maps[:, 0].float().numpy()
    cams = cams / cams.max()  # grad-cam's LeRF flips the map as 1 - map
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in inputs.targets]
    for k, q in enumerate(kept):
        metric = PerturbationConfidenceMetric(remove(q, road_gc.NoisyLinearImputer(noise=0)))
        theirs = metric(inputs.images, cams, targets, inputs.model, return_diff=False)
        assert relative(ours.curve[:, k], theirs) < RTOL
    assert ours.forward_passes == 2 * 3


def test_road_accuracy_is_the_top1_indicator():
    inputs = case(size=10, n=3)
    prob = score("road_morf", inputs, percentages=[30], noise=0.0, output="probability")
    acc = score("road_morf", inputs, percentages=[30], noise=0.0)
    assert set(acc.curve.flatten().tolist()) <= {0.0, 1.0}
    assert acc.per_image.shape == prob.per_image.shape == (3,)


def test_quantus_road_raises_index_error_with_colour_images():
    quantus = pytest.importorskip("quantus")
    inputs = case(size=10, n=1)
    with pytest.raises(IndexError):
        quantus_call(quantus.ROAD(percentages=[50], noise=0.0, normalise=False,
                                  disable_warnings=True), inputs, softmax=True)


def test_quantus_road_removes_a_third_of_the_pixels_it_says():
    # a_size = the pixels of a 1-channel map (H*W), but its order runs over the 3*H*W
    # colour values: "p %" removes p/3 % of the pixels (one-channel images: as said)
    quantus = pytest.importorskip("quantus")
    from quantus.metrics.faithfulness import road as qroad

    inputs = case(channels=1, size=10, n=1)
    removed = []

    def spy(arr, indices, **kwargs):
        removed.append(len(indices))
        return arr

    metric = quantus.ROAD(percentages=[30], normalise=False, disable_warnings=True,
                          perturb_func=spy)
    quantus_call(metric, inputs, softmax=True)
    assert removed == [30]  # one channel: 30 % of 100 pixels
    metric = qroad.ROAD(percentages=[30], normalise=False, disable_warnings=True,
                        perturb_func=spy)
    inputs3 = case(size=10, n=1)
    metric.a_size = None
    removed.clear()
    quantus_call(metric, inputs3, softmax=True)
    assert removed == [30]  # 30 values of 300: 10 pixels' worth, where 30 pixels were meant


@pytest.mark.parametrize("iterations,inside", [(500, True), (1, False)])
def test_with_noise_the_solve_stops_ten_times_below_the_noise(monkeypatch, iterations, inside):
    # with noise 1e-2 the system is solved to 1e-4 of its right-hand side: the imputed
    # values differ from the exact solve's by less than a tenth of the noise (one CG
    # iteration does not get there)
    from deconvviz.analyses.evaluation import imputation

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 40, 40, generator=g, dtype=torch.float64)
    removed = torch.zeros(1, 40, 40, dtype=torch.bool)
    removed[0, 5:35, 8:30] = True
    exact = R.impute(image, removed)
    monkeypatch.setattr(imputation, "MAX_ITERATIONS", iterations)
    noisy = R.impute(image, removed, noise=0.01, generator=torch.Generator().manual_seed(1))
    noise = 0.01 * torch.randn(image.shape, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float64)
    error = (noisy - noise * removed[:, None] - exact).abs().max()
    assert bool(error < 0.001) is inside


def test_the_fine_levels_product_equals_the_stencils():
    # the solver's fine level reads no per-pixel coefficients (the stencil's structure):
    # for values on the removed pixels it is the same product, to float64 rounding
    from deconvviz.analyses.evaluation import imputation as imp

    g = torch.Generator().manual_seed(0)
    removed = torch.rand(2, 1, 9, 11, generator=g) < 0.6
    u = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64) * removed
    general = imp._apply(imp.fine_stencil(removed, torch.float64), u)
    assert (imp._Fine(removed, torch.float64)(u) - general).abs().max() < 1e-15
    assert general.abs().max() > 0.1  # not a product of zeros
