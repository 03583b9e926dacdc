"""Every metric on a 4x4 image and a linear model whose output is worked out by hand:
logit_0 = sum of w * x over the pixels (x = 1 on the red channel, 0 on the others), logit_1 =
0, so the class-0 probability is sigmoid(sum of w over the pixels still there)."""
import math

import pytest
import torch
from torch import nn

from deconvviz.analyses.evaluation import Inputs, compute
from deconvviz.analyses.evaluation import faithfulness as fa
from deconvviz.analyses.evaluation import irof as ir
from deconvviz.analyses.evaluation import robustness as rb

W = torch.arange(16, dtype=torch.float64).view(4, 4) / 10  # pixel k weighs k / 10


def sig(v):
    return 1 / (1 + math.exp(-v))


def linear_case(maps=None, **kwargs):
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).double().eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[0, :16] = W.flatten()
    x = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    x[:, 0] = 1
    maps = W.view(1, 1, 4, 4).clone() if maps is None else maps
    return Inputs(model, x, maps, torch.tensor([0]), batch_size=3, **kwargs)


def kept_sum(removed):
    return (120 - sum(removed)) / 10  # sum of k / 10 over the pixels k not removed


def test_pixel_flipping_and_deletion():
    got = compute("pixel_flipping", linear_case(), steps=4, baseline=0.0)
    removed = [[], [15, 14, 13, 12], [15, 14, 13, 12, 11, 10, 9, 8], list(range(4, 16)),
               list(range(16))]
    expected = [sig(kept_sum(r)) for r in removed]
    assert got.curve[0].tolist() == pytest.approx(expected, rel=1e-12)
    area = sum((a + b) / 2 * 0.25 for a, b in zip(expected, expected[1:]))
    assert got.per_image.item() == pytest.approx(area, rel=1e-12)
    lerf = compute("pixel_flipping", linear_case(), steps=4, baseline=0.0, order="lerf")
    assert lerf.curve[0, 1].item() == pytest.approx(sig(kept_sum([0, 1, 2, 3])), rel=1e-12)
    deletion = compute("deletion", linear_case(), steps=4)  # RISE: zero substrate
    assert deletion.per_image.item() == pytest.approx(area, rel=1e-12)


def test_insertion_from_zero():
    got = compute("insertion", linear_case(), steps=2, substrate="zero")
    expected = [sig(0), sig(sum(range(8, 16)) / 10), sig(12.0)]
    assert got.curve[0].tolist() == pytest.approx(expected, rel=1e-12)


def test_region_perturbation():
    # 2x2 regions: sums 1.0 (top left), 1.8, 4.2, 5.0 (bottom right), removed largest first
    got = compute("region_perturbation_morf", linear_case(), patch_size=2, regions=2,
                  baseline=0.0, incremental=False)
    y0 = sig(12.0)
    drops = [y0 - sig(12.0 - 5.0), y0 - sig(12.0 - 5.0 - 4.2)]
    assert got.curve[0].tolist() == pytest.approx(drops, rel=1e-12)
    assert got.per_image.item() == pytest.approx(sum(drops) / 3, rel=1e-12)


def test_faithfulness_correlation(monkeypatch):
    picks = torch.tensor([[[15, 14], [0, 1], [5, 10]]])  # three subsets of two pixels
    monkeypatch.setattr(fa, "_subsets", lambda *args: picks)
    got = compute("faithfulness_correlation", linear_case(), runs=3, subset_size=2,
                  baseline=0.0)
    # each subset's map sum (2.9, 0.1, 1.5) is exactly the logit's drop: correlation 1
    assert got.per_image.item() == pytest.approx(1.0, rel=1e-12)
    flipped = linear_case(maps=-W.view(1, 1, 4, 4))
    assert compute("faithfulness_correlation", flipped, runs=3, subset_size=2,
                   baseline=0.0).per_image.item() == pytest.approx(-1.0, rel=1e-12)


def test_irof(monkeypatch):
    blocks = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    monkeypatch.setattr(ir, "superpixels", lambda images, n: blocks[None])
    got = compute("irof", linear_case(), baseline=0.0)
    # segment means 0.25, 0.45, 1.05, 1.25: removed 3, 2, 1, 0
    y0 = sig(12.0)
    ratios = [1, sig(7.0) / y0, sig(2.8) / y0, sig(1.0) / y0, sig(0.0) / y0]
    assert got.curve[0].tolist() == pytest.approx(ratios, rel=1e-12)
    area = sum((a + b) / 2 * 0.25 for a, b in zip(ratios, ratios[1:]))
    assert got.per_image.item() == pytest.approx(1 - area, rel=1e-12)


def test_road_one_pixel():
    # the most relevant pixel (15, the bottom-right corner) is imputed as the weighted mean
    # of its 3 neighbours: red 1, green and blue 0, as it was: the probability is kept
    got = compute("road_morf", linear_case(), percentages=[6.25], noise=0.0,
                  output="probability")
    assert got.curve[0, 0].item() == pytest.approx(sig(12.0), rel=1e-12)
    acc = compute("road_morf", linear_case(), percentages=[6.25], noise=0.0)
    assert acc.curve[0, 0].item() == 1.0


def test_average_drop_and_increase():
    maps = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    maps[0, 0, 3] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # the bottom row, scaled to /4
    got = compute("average_drop", linear_case(maps=maps))
    o = sig((1.2 * 1 + 1.3 * 2 + 1.4 * 3 + 1.5 * 4) / 4)
    y = sig(12.0)
    assert got.per_image.item() == pytest.approx(100 * (y - o) / y, rel=1e-12)
    assert compute("increase_in_confidence", linear_case(maps=maps)).per_image.item() == 0


def test_sparseness_and_complexity():
    maps = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    maps[0, 0, 0, 0], maps[0, 1, 2, 2], maps[0, 2, 2, 2] = -1.0, 1.0, 2.0  # sums: -1, 3
    inputs = linear_case(maps=maps)
    assert compute("sparseness", inputs).per_image.item() == pytest.approx(58 / 64, 1e-14)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert compute("complexity", inputs).per_image.item() == pytest.approx(h, rel=1e-14)


def test_robustness(monkeypatch):
    monkeypatch.setattr(rb, "noise", lambda kind, shape, scale, g: torch.full(shape, scale,
                                                                             dtype=torch.float64))
    inputs = linear_case(explain=lambda model, images, targets: 2 * images)
    inputs.maps = 2 * inputs.images
    # delta = 0.1 on every value: the map moves by 3 * 2 * 0.1 per pixel: ||.|| = 0.6 * 4
    lip = compute("local_lipschitz", inputs, samples=2, std=0.1).per_image.item()
    assert lip == pytest.approx(2.4 / (0.1 * math.sqrt(48)), rel=1e-12)
    sens = compute("max_sensitivity", inputs, samples=2, radius=0.1).per_image.item()
    assert sens == pytest.approx(2.4 / (2 * 4), rel=1e-12)  # ||map|| = 2 * 4


def test_randomisation():
    # a "method" that ignores the weights: rank order kept (1); the random logit's class-1
    # map equals the class-0 map: SSIM 1
    explain = lambda model, images, targets: images  # noqa: E731
    inputs = linear_case(explain=explain)
    inputs.maps = inputs.images.clone()
    inputs.maps[0, 0] = W  # the randomised "map" (the image) sums to a constant: 0
    assert compute("model_randomisation", inputs).per_image.item() == 0.0
    inputs.maps = inputs.images.clone()
    big = Inputs(inputs.model, torch.rand(1, 3, 7, 7, dtype=torch.float64), None,
                 torch.tensor([0]), explain=explain)
    big.maps = big.images.clone()
    assert compute("random_logit", _seven(big)).per_image.item() == 1.0


def _seven(inputs):
    model = nn.Sequential(nn.Flatten(), nn.Linear(147, 2)).double().eval()
    inputs.model = model
    return inputs
