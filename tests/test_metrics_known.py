"""Known answers on a model whose evidence is known: the plus-or-x CNN (tests/plus_or_x.py)
trained here on 40-px images whose class is the one placed white shape. The gradient finds
the shape (pointing game), a random map hits the shape's box as often as the box covers the
image (within two standard errors), and flipping the shape's pixels first (the true
evidence) destroys the class faster than a random order."""
import pytest
import torch
from plus_or_x import SIZE, Small, draw, fit

from deconvviz.analyses.evaluation import Inputs, compute


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread spends the fewest CPU-seconds
    try:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        model = Small()
        fit(model, torch.optim.Adam(model.parameters(), lr=3e-3), 40, g)
    finally:
        torch.set_num_threads(threads)
    kind = torch.randint(0, 2, (48,), generator=g)
    x = draw(kind, g)
    shape = (x == 1.0).all(dim=1)  # the shape's white pixels (the noise is below 0.3)
    rows, cols = shape.any(dim=2), shape.any(dim=1)
    box = rows[:, :, None] & cols[:, None, :]  # the shape's 7x7 box
    with torch.no_grad():
        assert (model(x).argmax(1) == kind).float().mean() > 0.9  # it learned the task
    return model, x, kind, shape, box


def _gradient(model, x, kind):
    x = x.clone().requires_grad_(True)
    model(x).gather(1, kind[:, None]).sum().backward()
    return (x.grad * x).detach().double()  # gradient x input


def test_the_gradient_points_at_the_shape(trained):
    model, x, kind, shape, box = trained
    inputs = Inputs(model, x, _gradient(model, x, kind), kind, masks=box)
    # TorchRay's 15 px at 224 px is about 3 px at 40 px
    hits = compute("pointing_game", inputs, tolerance=3).per_image
    assert hits.mean() >= 0.9
    assert compute("relevance_mass", inputs).per_image.mean() > 0.5


def test_a_random_map_hits_as_often_as_the_box_covers(trained):
    model, x, kind, shape, box = trained
    g = torch.Generator().manual_seed(1)
    masks = box.repeat(8, 1, 1)  # 384 draws
    maps = torch.rand(masks.shape[0], 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    inputs = Inputs(model, x.repeat(8, 1, 1, 1), maps, kind.repeat(8), masks=masks)
    hits = compute("pointing_game", inputs, tolerance=1).per_image  # the pixel itself
    share = masks.flatten(1).double().mean()  # 49 / 1600 (boxes at the border: fewer)
    se = (share * (1 - share) / hits.shape[0]).sqrt()
    assert abs(hits.mean() - share) < 2 * se
    # relevance mass of a random map: the box's share too (a mean of many pixels)
    mass = compute("relevance_mass", inputs).per_image
    assert abs(mass.mean() - share) < 2 * mass.std() / mass.shape[0] ** 0.5 + 1e-3


def test_flipping_the_true_evidence_beats_a_random_order(trained):
    model, x, kind, shape, box = trained
    evidence = shape[:, None].double() + 1e-3 * torch.rand(shape.shape[0], 1, SIZE, SIZE,
                                                           dtype=torch.float64)
    random = torch.rand(shape.shape[0], 1, SIZE, SIZE, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(2))
    truth = compute("pixel_flipping", Inputs(model, x, evidence, kind), steps=8,
                    baseline=0.0).per_image
    chance = compute("pixel_flipping", Inputs(model, x, random, kind), steps=8,
                     baseline=0.0).per_image
    diff = chance - truth
    assert diff.mean() > 3 * diff.std() / diff.shape[0] ** 0.5
