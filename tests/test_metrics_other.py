"""Sparseness and complexity, the randomisation tests and the robustness metrics against
Quantus 0.6 (and scikit-image's SSIM, scipy's Spearman), with the peers' departures."""
import numpy as np
import pytest
import torch
from metrics_cases import RTOL, case, quantus_call, relative, score

from deconvviz.analyses.evaluation import robustness as rb
from deconvviz.analyses.evaluation.randomisation import spearman, ssim_2d
from deconvviz.analyses.sanity import parametrised_layers, reinitialise

quantus = pytest.importorskip("quantus")


def gradient(model, images, targets):
    """The plain gradient of the target logit: a map that depends on weights and class."""
    x = torch.as_tensor(images).clone().requires_grad_(True)
    t = torch.as_tensor(targets).long()
    with torch.enable_grad():
        model(x).gather(1, t[:, None]).sum().backward()
    return x.grad.detach()


def _quantus_explain(model, inputs, targets, **kwargs):
    x = torch.as_tensor(inputs, dtype=torch.float32)
    return gradient(model, x, targets).sum(dim=1, keepdim=True).numpy()


@pytest.mark.parametrize("name,peer", [("sparseness", "Sparseness"),
                                       ("complexity", "Complexity")])
def test_sparseness_and_complexity_equal_quantus(name, peer):
    inputs = case(map_channels=3)
    theirs = quantus_call(getattr(quantus, peer)(normalise=False, disable_warnings=True),
                          inputs)
    # Quantus adds 1e-7 to every |value| before the Gini index (and 1e-12 in the log):
    # for maps of this size and scale, well under 1e-6 relative
    assert relative(score(name, inputs).per_image, theirs) < RTOL


def test_sparseness_and_complexity_of_extremes():
    inputs = case(n=2, size=4)
    one_hot = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    one_hot[:, 0, 1, 2] = -3
    inputs.maps = one_hot
    assert relative(score("sparseness", inputs).per_image, [15 / 16] * 2) < 1e-15
    assert score("complexity", inputs).per_image.abs().max() < 1e-15
    inputs.maps = torch.zeros_like(one_hot)
    assert score("sparseness", inputs).per_image.tolist() == [0.0, 0.0]
    assert relative(score("complexity", inputs).per_image, [np.log(16)] * 2) < 1e-15


def test_spearman_and_ssim_equal_scipy_and_skimage():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 9, 11, generator=g, dtype=torch.float64)
    b = a + torch.randn(3, 9, 11, generator=g, dtype=torch.float64)
    b[0, :3] = 0  # ties
    for i in range(3):
        rho = spearmanr(a[i].flatten(), b[i].flatten())[0]
        assert relative(spearman(a[i:i + 1].flatten(1), b[i:i + 1].flatten(1)), rho) < 1e-12
        both = torch.cat([a[i], b[i]])
        ref = structural_similarity(a[i].numpy(), b[i].numpy(),
                                    data_range=float(both.max() - both.min()))
        assert relative(ssim_2d(a[i:i + 1], b[i:i + 1]), ref) < 1e-12


def test_model_randomisation_is_spearman_to_the_randomised_models_map():
    from scipy.stats import spearmanr

    inputs = case(n=2, dtype=torch.float64, explain=gradient)
    inputs.maps = gradient(inputs.model, inputs.images, inputs.targets)
    before = [p.clone() for p in inputs.model.parameters()]
    ours = score("model_randomisation", inputs, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(before, inputs.model.parameters()))
    import copy

    other = copy.deepcopy(inputs.model)
    for k, path in enumerate(parametrised_layers(other)[::-1], start=1):
        reinitialise(other, path, 4 + k)
    b = gradient(other, inputs.images, inputs.targets).sum(1).abs()
    a = inputs.maps.sum(1).abs()
    for i in range(2):
        rho = spearmanr(a[i].flatten(), b[i].flatten())[0]
        assert relative(ours.per_image[i], rho) < 1e-12
    # a map that ignores the weights (the image itself) keeps its rank order: 1
    inputs.explain = lambda model, images, targets: images
    inputs.maps = inputs.images
    assert relative(score("model_randomisation", inputs).per_image, [1.0, 1.0]) < 1e-12


def test_random_logit_and_quantus_flattened_ssim():
    inputs = case(n=2, dtype=torch.float64, explain=gradient)
    inputs.maps = gradient(inputs.model, inputs.images, inputs.targets)
    ours = score("random_logit", inputs, seed=1)
    g = torch.Generator().manual_seed(1)
    other = (inputs.targets + torch.randint(1, 5, (2,), generator=g)) % 5
    assert (other != inputs.targets).all()
    ref = ssim_2d(inputs.maps.sum(1), gradient(inputs.model, inputs.images, other).sum(1))
    assert relative(ours.per_image, ref) < 1e-12
    # Quantus compares the two maps flattened to 1-D signals (skimage's SSIM over windows
    # of 7 values along the rows), not as images: a different number
    from quantus.functions.similarity_func import ssim

    a = inputs.maps.sum(1).numpy()
    b = gradient(inputs.model, inputs.images, other).sum(1).numpy()
    flat = ssim(a.reshape(2, -1), b.reshape(2, -1), batched=True)
    assert relative(flat, ref) > 1e-3


def _replay_numpy(monkeypatch, seed):
    np.random.seed(seed)

    def replay(kind, shape, scale, generator):
        n = shape[0]
        size = (n, int(np.prod(shape[1:])))
        if kind == "uniform":
            drawn = np.random.uniform(low=-scale, high=scale, size=size)
        else:
            drawn = np.random.normal(loc=0.0, scale=scale, size=size)
        return torch.from_numpy(drawn).view(shape)

    monkeypatch.setattr(rb, "noise", replay)


@pytest.mark.parametrize("name,peer,kw", [
    ("max_sensitivity", "MaxSensitivity", {"lower_bound": 0.2}),
    ("local_lipschitz", "LocalLipschitzEstimate", {"perturb_std": 0.1})])
def test_robustness_equals_quantus(monkeypatch, name, peer, kw):
    inputs = case(n=2, explain=gradient)
    inputs.maps = gradient(inputs.model, inputs.images, inputs.targets)
    np.random.seed(5)
    theirs = quantus_call(getattr(quantus, peer)(nr_samples=4, normalise=False,
                                                 disable_warnings=True, **kw),
                          inputs, explain_func=_quantus_explain, softmax=False)
    _replay_numpy(monkeypatch, 5)
    ours = score(name, inputs, samples=4)
    # float32 model and images (Quantus casts to float32); LLE adds 1e-10 to ||delta||
    assert relative(ours.per_image, theirs) < RTOL
    assert ours.forward_passes == 8


def test_max_sensitivity_of_an_all_zero_map_is_the_absolute_change():
    inputs = case(n=1, explain=lambda model, images, targets: torch.ones_like(images))
    inputs.maps = torch.zeros(1, 3, 12, 12)
    got = score("max_sensitivity", inputs, samples=2).per_image
    assert relative(got, [3 * 12.0]) < 1e-12  # ||3 summed channels of ones|| over 144 px
