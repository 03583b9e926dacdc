import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import deconvviz as dv
from deconvviz import figures
from deconvviz.analyses.projection import project
from deconvviz.choices import parse_features
from deconvviz.figures.display import crop_window, shared_scale, to_uint8


def test_signed_scaling_puts_zero_at_mid_grey():
    p = torch.zeros(3, 4, 4)
    p[0, 0, 0], p[1, 1, 1] = 2.0, -1.0
    img = to_uint8(p)
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    assert img[2, 2, 0] == 128  # zero
    assert img[0, 0, 0] == 255  # +max
    assert img[1, 1, 1] == 64  # -max/2 -> 127.5 - 63.75, rounded


def test_all_zero_projection_is_shown_as_zero_not_noise():
    zero = torch.zeros(3, 5, 5)
    assert (to_uint8(zero) == 128).all()
    assert (to_uint8(zero, "shared", vmax=0.0) == 128).all()
    assert (to_uint8(zero, "paper") == 0).all()
    photo = np.full((5, 5, 3), 77, np.uint8)
    assert (to_uint8(zero, "heatmap", photo=photo) == 77).all()


def test_shared_scaling_compares_strengths():
    a, b = torch.ones(3, 2, 2), 4 * torch.ones(3, 2, 2)
    vmax = shared_scale([a, b])
    assert vmax == 4.0
    assert to_uint8(a, "shared", vmax=vmax)[0, 0, 0] == 159  # rint(127.5 + 127.5 / 4)
    assert to_uint8(b, "shared", vmax=vmax)[0, 0, 0] == 255


def test_paper_scaling_keeps_the_positive_part_clipped():
    p = torch.linspace(-1, 1, 3 * 10 * 10).reshape(3, 10, 10)
    img = to_uint8(p, "paper", percentile=50)
    assert (img[p.permute(1, 2, 0).numpy() <= 0] == 0).all()
    assert img.max() == 255


def test_heatmap_blends_over_the_photo():
    p = torch.zeros(3, 4, 4)
    p[:, 0, 0] = 1.0
    photo = np.zeros((4, 4, 3), np.uint8)
    img = to_uint8(p, "heatmap", photo=photo, alpha=1.0)
    assert tuple(img[0, 0]) != tuple(img[3, 3])


def test_unknown_scaling_names_the_choices():
    with pytest.raises(dv.ArgumentError, match="signed, shared, paper, heatmap"):
        to_uint8(torch.zeros(3, 2, 2), "loud")


def test_crop_window_pads_at_the_borders():
    rgb = np.arange(16, dtype=np.uint8).reshape(4, 4, 1).repeat(3, 2)
    patch = crop_window(rgb, -1, 2, 3, 3)
    assert patch.shape == (3, 3, 3)
    assert (patch[0] == 0).all() and (patch[:, 2] == 0).all()
    assert patch[1, 0, 0] == rgb[0, 2, 0] and patch[2, 1, 0] == rgb[1, 3, 0]


def test_parse_features():
    assert parse_features("3,17,40-43") == [3, 17, 40, 41, 42, 43]
    with pytest.raises(dv.ArgumentError, match="3,17,40-47"):
        parse_features("3,x")


@pytest.fixture(scope="module")
def result():
    import os

    from conftest import EXAMPLES, zoo_model
    return project(zoo_model("zfnet"), os.path.join(EXAMPLES, "chelsea.png"), layer="conv2", top=6)


def test_project_picks_the_strongest_features(result):
    assert len(result) == 6 and result.pixels.shape == (6, 3, 224, 224)
    assert list(result.values) == sorted(result.values, reverse=True)
    assert "untrained" in result.title


def test_figures_leave_pyplot_alone(result):
    before = plt.get_fignums()
    for fig in [figures.projection_grid(result), figures.patch_grid(result),
                figures.layer_overview([result, result])]:
        assert fig.axes
    assert plt.get_fignums() == before


def test_result_displays_and_saves_arrays(result, tmp_path):
    png = result._repr_png_()
    assert png.startswith(b"\x89PNG")
    path = result.save(tmp_path / "r.npz")
    data = np.load(path)
    assert np.array_equal(data["pixels"], result.pixels.numpy())
    assert list(data["features"]) == result.features


def test_figure_functions_display_themselves(result):
    for fig in [figures.projection_grid(result), figures.layer_overview([result])]:
        assert isinstance(fig, figures.Figure)
        assert fig._repr_png_().startswith(b"\x89PNG")


def test_short_reprs(result):
    text = repr(result)
    assert text.startswith("Projections(zfnet conv2, 6 features [") and "224x224" in text
    assert "chelsea.png" in text and "untrained" in text and len(text.splitlines()) == 1
    net = dv.Deconvnet(result_model())
    assert repr(net) == "Deconvnet(zfnet, method='deconvnet', 13 named layers, device=cpu)"


def result_model():
    from conftest import zoo_model

    return zoo_model("zfnet")


def test_small_fields_are_cropped_to_the_receptive_field_by_default(result):
    # conv2's field is 27 px of a 224-px image: the paper's view, each tile the field only.
    assert result.geometry.size == (27, 27) and result.crops_by_default()
    cropped = result.figure()
    full = result.figure(view="full")
    tile = [ax for ax in cropped.axes if ax.get_title().startswith("#")][0]
    assert tile.get_images()[0].get_array().shape[:2] == (27, 27)
    tile = [ax for ax in full.axes if ax.get_title().startswith("#")][0]
    assert tile.get_images()[0].get_array().shape[:2] == (224, 224)
    assert "cropped to the 27-px receptive field" in cropped.texts[0].get_text()
    # The cropped tile is the full projection under the field, as displayed.
    top, left, h, w = result.windows()[0]
    full_image = result.images()[0]
    expected = full_image[max(top, 0):top + h, max(left, 0):left + w]
    got = result.patches()[0][0]
    assert np.array_equal(got[max(-top, 0):max(-top, 0) + expected.shape[0],
                              max(-left, 0):max(-left, 0) + expected.shape[1]], expected)
    with pytest.raises(dv.ArgumentError, match="auto, crop, full"):
        result.figure(view="zoom")


def test_layer_overview_shows_the_input_photo(result):
    fig = figures.layer_overview([result, result])
    titles = [ax.get_title() for ax in fig.axes]
    assert "input crop" in titles
    photo = next(ax for ax in fig.axes if ax.get_title() == "input crop")
    assert np.array_equal(photo.get_images()[0].get_array(), result.rgb)
