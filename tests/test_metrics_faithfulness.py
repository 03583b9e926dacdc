"""Pixel flipping, region perturbation, RISE's deletion and insertion, faithfulness
correlation and IROF against Quantus 0.6 and torchcam 0.5 on the same model, images and
maps (to 1e-6 relative), and where those depart from the papers, the departure shown on a
hand-built case."""
import numpy as np
import pytest
import torch
from metrics_cases import RTOL, Maps, case, quantus_call, relative, score
from torch import nn

from deconvviz.analyses.evaluation import faithfulness as fa
from deconvviz.analyses.evaluation import irof as fa_irof

quantus = pytest.importorskip("quantus")


def test_pixel_flipping_equals_quantus():
    # 12x12: Quantus perturbs features_in_step values of the flattened [3, H, W] array and
    # needs H*W divisible by it; 48 values are 16 whole pixels (its argsort keeps a
    # pixel's three equal channel values together)
    inputs = case()
    ours = score("pixel_flipping", inputs, steps=9, baseline="black")
    theirs = quantus_call(quantus.PixelFlipping(features_in_step=48, perturb_baseline="black",
                                                normalise=False, disable_warnings=True),
                          inputs, softmax=True)
    assert relative(ours.curve[:, 1:], theirs) < RTOL
    assert ours.forward_passes == 3 * 10
    # the score is the curve's area over the fraction removed, from the unperturbed image
    assert relative(ours.per_image, np.trapezoid(ours.curve.numpy(), dx=1 / 9)) < 1e-12


def test_quantus_pixel_flipping_steps_through_colour_values_not_pixels():
    # Quantus's features_in_step counts values of [3, H, W]: a step of 16 (dividing H*W, as
    # it asserts) removes 5 1/3 pixels, and its curve has 3x the steps asked for
    inputs = case()
    theirs = quantus_call(quantus.PixelFlipping(features_in_step=16, perturb_baseline="black",
                                                normalise=False, disable_warnings=True),
                          inputs, softmax=True)
    assert np.asarray(theirs).shape[1] == 3 * 144 // 16


@pytest.mark.agreement  # float32 passes in batches of other sizes than Quantus's
@pytest.mark.parametrize("how", ["morf", "lerf"])
@pytest.mark.parametrize("patch,baseline", [(4, "black"), (5, 0.3)])
def test_region_perturbation_equals_quantus(how, patch, baseline):
    inputs = case()
    ours = score(f"region_perturbation_{how}", inputs, patch_size=patch, regions=6,
                 baseline=baseline, incremental=False)
    theirs = quantus_call(quantus.RegionPerturbation(
        patch_size=patch, order=how, regions_evaluation=6, perturb_baseline=baseline,
        normalise=False, disable_warnings=True), inputs, softmax=True)
    # the curve is the drop y0 - y_k of float32 probabilities, whose rounding is relative to
    # them (about 1e-8 of drops about 1e-2): compared as the probabilities y_k each side ran
    with torch.no_grad():
        y0 = inputs.model(inputs.images).softmax(1).gather(1, inputs.targets[:, None]).double()
    assert relative(y0 - ours.curve, y0.numpy() - np.asarray(theirs)) < RTOL
    # AOPC: the drops summed over regions + 1 steps (the paper's, Quantus gives the curve)
    assert relative(ours.per_image, ours.curve.sum(1) / 7) < 1e-12


@pytest.mark.parametrize("steps", [9, 10])
def test_deletion_and_insertion_equal_torchcam(steps):
    from torchcam.metrics import DeletionInsertionMetric

    inputs = case(dtype=torch.float64, positive=True)
    ours_d = score("deletion", inputs, steps=steps)
    ours_i = score("insertion", inputs, steps=steps, substrate="zero")
    metric = DeletionInsertionMetric(Maps(inputs.model, inputs.maps[:, 0]),
                                     lambda logits: logits.softmax(-1), steps=steps)
    metric.update(inputs.images, class_idx=inputs.targets.tolist())
    theirs = metric.summary()
    # torchcam's fractions are float32: 1e-6 relative covers them
    assert relative(ours_d.per_image.mean(), theirs["deletion_auc"]) < RTOL
    assert relative(ours_i.per_image.mean(), theirs["insertion_auc"]) < RTOL


def test_insertion_starts_from_rise_blur():
    from torchcam.metrics import DeletionInsertionMetric

    inputs = case(dtype=torch.float64, positive=True)
    blurred = fa.rise_blur(inputs.images)
    metric = DeletionInsertionMetric(Maps(inputs.model, inputs.maps[:, 0]),
                                     lambda logits: logits.softmax(-1), steps=9,
                                     baseline=blurred)
    metric.update(inputs.images, class_idx=inputs.targets.tolist())
    ours = score("insertion", inputs, steps=9)
    assert relative(ours.per_image.mean(), metric.summary()["insertion_auc"]) < RTOL
    # RISE's kernel: a delta through gaussian_filter(sigma=5) on 11x11, sums to 1
    one = fa.rise_blur(torch.ones(1, 1, 31, 31, dtype=torch.float64))
    assert abs(float(one[0, 0, 15, 15]) - 1) < 1e-12


class Float64(nn.Module):
    def forward(self, x):
        return x.double()


def test_faithfulness_correlation_equals_quantus(monkeypatch):
    # one colour channel: Quantus draws its subsets over the values of [C, H, W]; with C = 1
    # they are pixels, and deconvviz is given the subsets Quantus drew
    # float64 (float32 logits' drops of about 1e-2 round at 1e-6 of them): images whose
    # values float32 holds exactly, and Quantus's float32 input turned back into float64
    inputs = case(channels=1, dtype=torch.float64)
    inputs.images = inputs.images.float().double()
    with torch.no_grad():
        inputs.targets = inputs.model(inputs.images).argmax(dim=1)
    ours_model = inputs.model
    seen = []
    original = quantus.functions.perturb_func.batch_baseline_replacement_by_indices

    def spy(arr, indices, **kwargs):
        seen.append(torch.as_tensor(indices))
        return original(arr, indices, **kwargs)

    inputs.model = nn.Sequential(Float64(), ours_model).eval()
    theirs = quantus_call(quantus.FaithfulnessCorrelation(
        nr_runs=6, subset_size=20, perturb_baseline="black", normalise=False,
        disable_warnings=True, return_aggregate=False, perturb_func=spy), inputs,
        softmax=False)
    inputs.model = ours_model
    picks = torch.stack(seen, dim=1)  # [N, runs, 20]
    monkeypatch.setattr(fa, "_subsets", lambda *args: picks)
    ours = score("faithfulness_correlation", inputs, runs=6, subset_size=20)
    assert relative(ours.per_image, theirs) < RTOL
    assert ours.forward_passes == 3 + 3 * 6


def test_quantus_faithfulness_correlation_removes_colour_values_not_pixels(monkeypatch):
    # with 3 colour channels Quantus's subsets index the 3 * H * W values: a subset of 20
    # pixels' worth removes single colour values (Bhatt et al. remove features: pixels)
    inputs = case(n=1)
    seen = []
    original = quantus.functions.perturb_func.batch_baseline_replacement_by_indices

    def spy(arr, indices, **kwargs):
        seen.append(indices)
        return original(arr, indices, **kwargs)

    metric = quantus.FaithfulnessCorrelation(nr_runs=2, subset_size=20, normalise=False,
                                             disable_warnings=True, perturb_func=spy)
    quantus_call(metric, inputs, softmax=False)
    assert max(int(i.max()) for i in seen) >= 144  # beyond the pixels: colour values


def test_irof_equals_quantus(monkeypatch):
    # Quantus 0.6's IROF runs only on one-channel images (its mask [N, 1, H, W] must equal
    # the image's shape) and calls np.trapz, gone from numpy 2: both worked around here
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    inputs = case(channels=1, size=10, n=1)  # one image: Quantus pads shorter curves with 0
    ours = score("irof", inputs, segments=100, baseline=0.2)  # SLIC's default, as Quantus
    counts = fa_irof.superpixels(inputs.images, 100).flatten(1).amax(1) + 1
    for i, one in enumerate([inputs]):
        theirs = quantus_call(quantus.IROF(perturb_baseline=0.2, normalise=False,
                                           disable_warnings=True, return_aggregate=False),
                              one, softmax=True)
        # Quantus's curve omits the unperturbed 1 and its area is over segment counts: S
        # minus the trapezoid over the steps; deconvviz's is over the fraction removed
        s = int(counts[i])
        curve = ours.curve[i, :s + 1].numpy()
        # (the area over is a small difference of two numbers near S: compared relative to
        # the area under, S's scale; float32 ratios as Quantus computes them)
        area_under = np.trapezoid(curve[1:], dx=1)
        assert abs((s - area_under) - float(np.asarray(theirs)[0])) < RTOL * area_under
        assert relative(ours.per_image[i], 1 - np.trapezoid(curve, dx=1 / s)) < 1e-12


def test_quantus_irof_refuses_colour_images(monkeypatch):
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    inputs = case(size=16)
    with pytest.raises(AssertionError, match="shape of arr must be the same as the mask"):
        quantus_call(quantus.IROF(normalise=False, disable_warnings=True), inputs,
                     softmax=True)
    assert score("irof", inputs, segments=10).per_image.shape == (3,)
