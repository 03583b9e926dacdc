"""The metric table (deconvviz.metric_table): names, families, resolving a spec, and the
registry's defaults and refusals (deconvviz.analyses.evaluation.base)."""
import re

import pytest
import torch

from deconvviz import metric_table
from deconvviz.errors import ArgumentError


def test_every_metric_is_in_a_family_and_states_its_conventions():
    for m in metric_table.entries():
        assert m.family in metric_table.FAMILIES
        assert m.sign and m.channels == metric_table.CHANNELS and m.summary and m.paper
    assert set(metric_table.names()) == {n for f in metric_table.FAMILIES
                                         for n in metric_table.names(f)}


def test_resolve_expands_all_families_and_lists():
    assert metric_table.resolve("all") == metric_table.names()
    assert metric_table.resolve("complexity") == ["sparseness", "complexity"]
    assert metric_table.resolve("road_morf, sparseness,road_morf") == ["road_morf",
                                                                        "sparseness"]


@pytest.mark.parametrize("spec", ["roadd", "faithfulnes", ""])
def test_unknown_names_are_refused_naming_the_choices(spec):
    with pytest.raises(ArgumentError, match="faithfulness"):
        metric_table.resolve(spec)


def test_get_suggests_the_closest():
    with pytest.raises(ArgumentError, match="'pointing_game'"):
        metric_table.get("pointing_gme")


def test_register_and_unregister_a_metric():
    m = metric_table.register(metric_table.Metric("toy_metric", "toy", "complexity", True))
    try:
        assert metric_table.get("toy_metric") is m
        with pytest.raises(ArgumentError, match="exists"):
            metric_table.register(m)
    finally:
        metric_table.unregister("toy_metric")
    with pytest.raises(ArgumentError, match="built in"):
        metric_table.unregister("sparseness")
    with pytest.raises(ArgumentError, match="family"):
        metric_table.Metric("x", "x", "speed", True)


@pytest.mark.parametrize("name,params", [
    ("pixel_flipping", {"steps": 5}), ("deletion", {"steps": 7}), ("insertion", {"steps": 3}),
    ("region_perturbation_morf", {"patch_size": 5, "regions": 100}),  # fewer cells (9)
    ("region_perturbation_lerf", {"patch_size": 4, "regions": 4}),
    ("road_morf", {"percentages": (20, 50)}), ("faithfulness_correlation", {"runs": 6}),
    ("average_drop", {}), ("increase_in_confidence", {}),
])
def test_the_planned_forward_passes_are_those_the_metric_counts(name, params):
    # what the progress bar announces before a run equals what each metric counts running
    from metrics_cases import case

    from deconvviz.analyses.evaluation import compute

    inputs = case(size=12, n=3, generator=torch.Generator().manual_seed(0))
    ran = compute(name, inputs, **params).forward_passes
    assert metric_table.forward_passes(name, 12, 12, params) * 3 == ran
    assert metric_table.forward_passes("sparseness", 12, 12) is None


@pytest.mark.parametrize("name,params,message", [
    ("deletion", {"steps": "abc"}, "deletion's steps is a whole number of at least 1, got 'abc'"),
    ("deletion", {"steps": 0}, "at least 1, got 0"),
    ("deletion", {"steps": True}, "whole number"),
    ("faithfulness_correlation", {"runs": 1}, "at least 2, got 1"),
    ("deletion", {"substrate": "purple"}, "one of black, white, mean, uniform, zero, blur"),
    ("pixel_flipping", {"baseline": "blur"}, "one of black, white, mean, uniform, zero, got"),
    ("road_morf", {"percentages": (10, 100)}, "numbers in [0, 100)"),
    ("road_morf", {"percentages": "10"}, "numbers in [0, 100)"),
    ("road_morf", {"output": "logits"}, "one of probability, logit, accuracy"),
    ("max_sensitivity", {"radius": 0}, "a number above 0"),
    ("irof", {"incremental": "maybe"}, "None (the CPU's choice), True or False"),
    ("region_perturbation_morf", {"order": "lerf"}, "evaluate region_perturbation_lerf"),
    ("deletion", {"step": 4}, "takes no parameter step; its parameters: steps, substrate"),
])
def test_a_parameters_value_is_refused_before_anything_runs(name, params, message):
    with pytest.raises(ArgumentError, match=re.escape(message)):
        metric_table.check_params(name, params)


def test_the_order_of_pixel_flipping_sets_its_direction_and_title():
    assert not metric_table.higher_is_better("pixel_flipping")
    assert metric_table.higher_is_better("pixel_flipping", {"order": "lerf"})
    assert metric_table.title("pixel_flipping", {"order": "lerf"}) == "pixel flipping (LeRF)"
    assert metric_table.title("pixel_flipping", {"order": "morf"}) == "pixel flipping"
    metric_table.check_params("road_lerf", {"order": "lerf", "percentages": [0, 99.5]})
