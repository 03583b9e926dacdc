"""Average Drop and Increase in Confidence against torchcam 0.5's and pytorch-grad-cam's, and
where grad-cam departs from the Grad-CAM++ paper."""
import pytest
import torch
from metrics_cases import RTOL, Maps, case, relative, score


def test_average_drop_and_increase_equal_torchcams():
    from torchcam.metrics import ClassificationMetric

    inputs = case(dtype=torch.float64, n=6, positive=True)
    inputs.maps = inputs.maps / inputs.maps.flatten(1).amax(1).view(-1, 1, 1, 1)  # a CAM
    metric = ClassificationMetric(Maps(inputs.model, inputs.maps[:, 0]),
                                  lambda logits: logits.softmax(-1))
    metric.update(inputs.images, class_idx=inputs.targets.tolist())
    theirs = metric.summary()
    drop, inc = score("average_drop", inputs), score("increase_in_confidence", inputs)
    # torchcam divides by y + 1e-7: 1e-7 / y relative, under RTOL for these y
    assert relative(drop.per_image.mean() / 100, theirs["avg_drop"]) < RTOL
    assert relative(inc.per_image.mean() / 100, theirs["conf_increase"]) < 1e-12
    assert drop.forward_passes == 12


def test_grad_cams_drop_in_confidence_is_not_divided_by_the_score():
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    inputs = case(dtype=torch.float64, n=6, positive=True)
    inputs.maps = inputs.maps / inputs.maps.flatten(1).amax(1).view(-1, 1, 1, 1)
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in inputs.targets]
    cams = inputs.maps[:, 0].numpy()
    theirs = DropInConfidence()(inputs.images, cams, targets, inputs.model)
    with torch.no_grad():
        y = inputs.model(inputs.images).softmax(-1).gather(1, inputs.targets[:, None])[:, 0]
    ours = score("average_drop", inputs).per_image
    # grad-cam's is max(0, y - o); the paper's (and deconvviz's) max(0, y - o) / y
    assert relative(ours / 100 * y, theirs) < RTOL
    assert relative(ours / 100, theirs) > 0.1
    increase = IncreaseInConfidence()(inputs.images, cams, targets, inputs.model)
    assert relative(score("increase_in_confidence", inputs).per_image / 100, increase) < 1e-12


def test_the_mask_is_the_positive_part_over_its_maximum():
    from deconvviz.analyses.evaluation.confidence import cam_mask

    maps = torch.tensor([[[[-2.0, 1.0], [4.0, 0.0]]], [[[-1.0, -3.0], [0.0, 0.0]]]])
    assert torch.equal(cam_mask(maps)[:, 0], torch.tensor([[[0.0, 0.25], [1.0, 0.0]],
                                                           [[0.0, 0.0], [0.0, 0.0]]],
                                                          dtype=torch.float64))


@pytest.mark.parametrize("name", ["average_drop", "increase_in_confidence"])
def test_an_all_zero_map_gets_a_number(name):
    inputs = case(n=2)
    inputs.maps = torch.zeros_like(inputs.maps)
    assert torch.isfinite(score(name, inputs).per_image).all()
