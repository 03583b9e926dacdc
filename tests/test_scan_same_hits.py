"""``same_hits``, the comparison the agreement tests rely on: values to the tolerance,
near-ties allowed, nothing else."""
import pytest
import torch
from scan_photos import make_photos

import deconvviz as dv
from deconvviz.analyses.dataset_scan import scan
from deconvviz.analyses.scan_result import ScanResult, same_hits


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def model():
    return dv.load_model("zfnet", weights=None)


@pytest.fixture(scope="module")
def conv5_scan(photos, model):
    return scan(model, str(photos), layers=["conv5"], hits=3, progress=False)


def altered(result, change):
    """A copy of a conv5 scan with its hit tensors changed by ``change(tops, strongest)``."""
    tops = result.data["tops"]["conv5"]
    copy = {k: v.clone() for k, v in tops.items()}
    change(copy, float(tops["values"].max()))
    return ScanResult({**result.data, "tops": {"conv5": copy}})


def swap(t, feature, a, b, keys=("values", "images", "ys", "xs", "runner_ups")):
    for key in keys:
        t[key][feature, [a, b]] = t[key][feature, [b, a]].clone()


@pytest.mark.parametrize("relative,agree", [(1e-6, True), (1e-3, False)])
def test_same_hits_holds_values_to_the_tolerance(conv5_scan, relative, agree):
    # Every value moved by `relative` of the layer's strongest hit, alternately up and down
    # (so no hit changes rank): inside VALUE_RTOL (1e-4) agrees, outside is reported.
    def perturb(t, strongest):
        fired = t["images"] >= 0
        sign = torch.ones_like(t["values"])
        sign[:, 1::2] = -1
        t["values"][fired] += (sign * relative * strongest)[fired]

    problems = same_hits(conv5_scan, altered(conv5_scan, perturb))
    assert (problems == []) == agree, problems[:3]
    if not agree:
        assert "values" in problems[0]


def test_same_hits_allows_two_images_tied_and_nothing_else(conv5_scan):
    def tie(t, strongest):  # feature 0's first two hits made tied ...
        t["values"][0, 1] = t["values"][0, 0] - 1e-6 * strongest

    def tie_and_swap(t, strongest):  # ... then swapped, as another kernel may order them
        tie(t, strongest)
        swap(t, 0, 0, 1)

    def swap_untied(t, strongest):  # the same swap of two hits 2x apart
        t["values"][0, 1] = t["values"][0, 0] * 0.5
        swap(t, 0, 0, 1, keys=("images", "ys", "xs", "runner_ups"))

    def moved(t, strongest):  # the strongest hit of feature 3 put on another image
        t["images"][3, 0] = (t["images"][3, 0] + 1) % len(conv5_scan.images)

    assert same_hits(altered(conv5_scan, tie), altered(conv5_scan, tie_and_swap)) \
        == []
    assert same_hits(conv5_scan, altered(conv5_scan, swap_untied))
    assert "not a near-tie" in same_hits(conv5_scan, altered(conv5_scan, moved))[0]


def test_same_hits_allows_an_image_tied_at_the_last_kept_rank(conv5_scan):
    # Its twin beyond the list is unseen: the last hit may be another image of equal value.
    def replaced(t, strongest):
        t["images"][5, 2] = (t["images"][5, 2] + 1) % len(conv5_scan.images)
        t["values"][5, 2] -= 1e-6 * strongest

    def untied(t, strongest):
        t["values"][5, 1] = t["values"][5, 0] * 0.5

    def replaced_earlier(t, strongest):  # the same at rank 0, between untied neighbours
        untied(t, strongest)
        t["images"][5, 0] = (t["images"][5, 0] + 1) % len(conv5_scan.images)

    assert same_hits(conv5_scan, altered(conv5_scan, replaced)) == []
    problems = same_hits(altered(conv5_scan, untied),
                                     altered(conv5_scan, replaced_earlier))
    assert len(problems) == 1 and "not a near-tie" in problems[0]


def test_same_hits_allows_two_positions_tied_within_one_map(conv5_scan):
    # The scan records each hit's runner-up in its own map: a position that moves within
    # one image is a near-tie only where that runner-up is within the tolerance.
    def tied_position(t, strongest):
        t["xs"][7, 0] = (t["xs"][7, 0] + 1) % 13
        t["runner_ups"][7, 0] = t["values"][7, 0] - 1e-6 * strongest

    def moved_position(t, strongest):
        t["xs"][7, 0] = (t["xs"][7, 0] + 1) % 13
        t["runner_ups"][7, 0] = t["values"][7, 0] * 0.5

    assert same_hits(conv5_scan, altered(conv5_scan, tied_position)) == []
    problems = same_hits(conv5_scan, altered(conv5_scan, moved_position))
    assert len(problems) == 1 and "same map" in problems[0]
