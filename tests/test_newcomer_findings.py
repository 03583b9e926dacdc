"""What the third newcomer found (issue 35) in the Python API: each test failed on the main
of before the fix (the note of issue 35 says which way)."""
import numpy as np
import pytest
import torch
from torch import nn

import deconvviz as dv
from deconvviz.choices import parse_features


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4)).eval()


# item 6: a feature visualisation's image is looked up by its unit, not its row
def test_feature_vis_image_takes_the_unit_number_not_the_row():
    model = small_cnn()
    result = dv.feature_vis(model, "3", features=[5, 3, 1, 0], steps=2, image_size=16,
                            input_size=16)
    for row, unit in enumerate([5, 3, 1, 0]):
        expected = (result.images[row, 0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5)
        assert np.array_equal(result.image(unit), expected.astype(np.uint8))
    assert not np.array_equal(result.image(3), result.image(0))  # unit 3 is row 1, not row 3
    with pytest.raises(dv.ArgumentError, match="unit 7 was not optimised; this result holds "
                                               "5, 3, 1, 0"):
        result.image(7)
    with pytest.raises(dv.ArgumentError, match="holds 1 per unit"):
        result.image(3, index=1)


# item 8: CRP at the output layer is refused with a sentence, not a KeyError
def test_crp_at_the_output_layer_says_why_it_is_refused():
    model = small_cnn()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(dv.ArgumentError, match="'7' is the model's output: .*a layer below"):
        dv.crp(model, x, layer="7", top=2)
    assert dv.crp(model, x, layer="4", top=2).heatmaps.shape[:2] == (1, 2)


def test_the_crp_command_at_fc8_is_one_error_line(tmp_path):
    from conftest import CHELSEA, invoke

    done = invoke("crp", "--model", "zfnet", "--weights", "none", "-l", "fc8", CHELSEA,
                  "--out", str(tmp_path / "c.png"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: 'fc8' is the model's output")
    assert len(done.stderr.strip().splitlines()) == 1


# item 10: class names on a layer's objective, and class names on the command line
def test_a_class_name_for_a_layer_objective_is_refused_naming_the_logit_objective():
    model = small_cnn()
    with pytest.raises(dv.ArgumentError, match="channel numbers .*objective='logit'"):
        dv.feature_vis(model, "3", features=["tabby"], steps=1, image_size=16, input_size=16)


def test_logit_feature_lists_take_class_names():
    assert parse_features("281,tabby", names=True) == [281, "tabby"]
    assert parse_features("3-5", names=True) == [3, 4, 5]
    with pytest.raises(dv.ArgumentError, match="bad feature list"):
        parse_features("281,tabby")


# item 1: the README's sentence about training mode is what every function does
def test_the_readme_says_what_the_guard_does():
    import os

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    assert "A model in training mode is refused\nby every function that runs a model" in readme


# items 4 and 7, for dv.attribute: a map that is not an answer says so in the result and
# the figure
def test_an_attribution_that_is_numerically_zero_says_so():
    model = small_cnn()
    with torch.no_grad():
        model[7].weight.zero_()  # no gradient reaches the input: the map is exactly zero
    result = dv.attribute(model, torch.randn(1, 3, 16, 16), method="gradient", target=0)
    assert result.map.abs().max() == 0
    assert result.notes[0].startswith("numerically zero")
    labels = [ax.get_xlabel() for ax in result.figure().axes]
    assert any(label.startswith("numerically zero") for label in labels)
    fine = dv.attribute(small_cnn(), torch.randn(1, 3, 16, 16), method="gradient", target=0)
    assert fine.notes == [None]
