"""The pointing game (TorchRay's protocol), relevance mass and rank accuracy and the
energy-based pointing game against Quantus 0.6, hand-built cases and the tolerance on both
sides of its edge."""
import pytest
import torch
from metrics_cases import RTOL, case, quantus_call, relative, score

from deconvviz.errors import ArgumentError

quantus = pytest.importorskip("quantus")


def _with_masks(n=4, size=12, positive=False, seed=0):
    inputs = case(n=n, size=size, positive=positive, seed=seed)
    g = torch.Generator().manual_seed(7)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        y, x = torch.randint(0, size - 4, (2,), generator=g).tolist()
        masks[i, y:y + 4, x:x + 5] = True
    inputs.masks = masks
    return inputs


def _s(inputs):
    return inputs.masks[:, None].float().numpy()


def test_pointing_game_at_tolerance_1_is_quantus():
    # Quantus's pointing game asks whether the maximum lies in the mask: TorchRay's disc
    # with tolerance 1 (distance < 1: the pixel itself)
    inputs = _with_masks(n=8)
    theirs = quantus_call(quantus.PointingGame(normalise=False, disable_warnings=True),
                          inputs, s_batch=_s(inputs))
    ours = score("pointing_game", inputs, tolerance=1)
    assert ours.per_image.tolist() == [float(t) for t in theirs]
    assert 0 < ours.per_image.sum() < 8


@pytest.mark.parametrize("name,peer", [("relevance_mass", "RelevanceMassAccuracy"),
                                       ("relevance_rank", "RelevanceRankAccuracy")])
def test_relevance_mass_and_rank_equal_quantus(name, peer):
    inputs = _with_masks(positive=True)  # Quantus sums signed relevance; positive maps agree
    theirs = quantus_call(getattr(quantus, peer)(normalise=False, disable_warnings=True),
                          inputs, s_batch=_s(inputs))
    assert relative(score(name, inputs).per_image, theirs) < RTOL


def test_quantus_relevance_mass_counts_negative_relevance():
    inputs = _with_masks()
    theirs = quantus_call(quantus.RelevanceMassAccuracy(normalise=False, disable_warnings=True),
                          inputs, s_batch=_s(inputs))
    ours = score("relevance_mass", inputs).per_image
    assert ((ours >= 0) & (ours <= 1)).all()
    assert any(t < 0 or t > 1 for t in theirs) or relative(ours, theirs) > 1e-3


def test_pointing_game_tolerance_inside_and_outside():
    # the maximum at (2, 2); the object's nearest pixel at (2, 7): 5 px away
    maps = torch.zeros(1, 1, 10, 10, dtype=torch.float64)
    maps[0, 0, 2, 2] = 1
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, 0:5, 7:10] = True
    inputs = case(n=1, size=10)
    inputs.maps, inputs.masks = maps, masks
    assert score("pointing_game", inputs, tolerance=6).per_image.item() == 1  # 5 < 6
    assert score("pointing_game", inputs, tolerance=5).per_image.item() == 0  # 5 < 5: no
    # diagonal: (2, 2) to (5, 6) is 5 px (3-4-5)
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, 5:, 6:] = True
    inputs.masks = masks
    assert score("pointing_game", inputs, tolerance=5.01).per_image.item() == 1
    assert score("pointing_game", inputs, tolerance=5).per_image.item() == 0


def test_hand_built_mass_rank_and_energy():
    maps = torch.tensor([[[[4.0, -1.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0],
                           [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]], dtype=torch.float64)
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # holds 4, -1, 1, 2; outside: 3
    inputs = case(n=1, size=4)
    inputs.maps, inputs.masks = maps, masks
    assert score("relevance_mass", inputs).per_image.item() == pytest.approx(7 / 10, 1e-15)
    assert score("energy_pointing_game", inputs).per_image.item() == pytest.approx(0.7, 1e-15)
    # K = 4: the 4 largest are 4, 3, 2, 1: three of them on the object
    assert score("relevance_rank", inputs).per_image.item() == pytest.approx(0.75, 1e-15)
    assert score("pointing_game", inputs, tolerance=1).per_image.item() == 1
    inputs.maps = torch.zeros_like(maps)
    for name in ("relevance_mass", "relevance_rank", "energy_pointing_game", "pointing_game"):
        assert score(name, inputs).per_image.item() == 0  # the stated score, no NaN


def test_localisation_needs_masks_and_an_object():
    inputs = case(n=1, size=4)
    with pytest.raises(ArgumentError, match="boxes or masks"):
        score("pointing_game", inputs)
    inputs.masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ArgumentError, match="mask is empty"):
        score("relevance_mass", inputs)
