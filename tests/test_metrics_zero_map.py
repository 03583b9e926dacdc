"""Every metric in the table gives a map that is zero everywhere its stated score: a number,
never a NaN or a division by zero (deconvviz.metric_table's summaries say which)."""
import pytest
import torch
from metrics_cases import case

from deconvviz import metric_table
from deconvviz.analyses.evaluation import compute

SMALL = {"pixel_flipping": {"steps": 4}, "deletion": {"steps": 4}, "insertion": {"steps": 4},
         "region_perturbation_morf": {"patch_size": 4, "regions": 3},
         "region_perturbation_lerf": {"patch_size": 4, "regions": 3},
         "road_morf": {"percentages": (20, 60)}, "road_lerf": {"percentages": (20, 60)},
         "faithfulness_correlation": {"runs": 3, "subset_size": 10},
         "irof": {"segments": 6}, "max_sensitivity": {"samples": 2},
         "local_lipschitz": {"samples": 2}}
STATED = {"sparseness": 0.0, "relevance_mass": 0.0, "relevance_rank": 0.0,
          "energy_pointing_game": 0.0, "pointing_game": 0.0, "faithfulness_correlation": 0.0,
          "model_randomisation": 0.0}


def _explain(model, images, targets):
    x = images.clone().requires_grad_(True)
    with torch.enable_grad():
        model(x).gather(1, targets[:, None]).sum().backward()
    return x.grad.detach()


@pytest.mark.parametrize("name", metric_table.names())
def test_an_all_zero_map_scores_a_number(name):
    inputs = case(n=2, explain=_explain, generator=torch.Generator().manual_seed(0))
    inputs.maps = torch.zeros(2, 3, 12, 12, dtype=torch.float64)
    inputs.masks = torch.zeros(2, 12, 12, dtype=torch.bool)
    inputs.masks[:, 2:6, 3:9] = True
    got = compute(name, inputs, **SMALL.get(name, {})).per_image
    assert got.shape == (2,) and torch.isfinite(got).all()
    if name in STATED:
        assert got.tolist() == [STATED[name]] * 2
