"""Loading a checkpoint builds the model without drawing its initial weights (the checkpoint
replaces every one of them), leaves the caller's random state and ``torch.nn.init`` as they
were, also after a refused checkpoint, and gives the saved weights bit for bit."""
import pytest
import torch
from conftest import zoo_model

import deconvviz as dv
from deconvviz.data.zoo import checkpoint_payload


def test_a_checkpoint_loads_without_drawing_initial_weights(tmp_path):
    model = zoo_model("resnet18")  # the zoo's smallest: 11.7 M weights
    path = tmp_path / "r18.pt"
    torch.save(checkpoint_payload(model, "resnet18"), path)
    init_functions = dict(vars(torch.nn.init))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    loaded = dv.load_model("resnet18", weights=path)
    # building it drew nothing: ResNet's layers initialise only through torch.nn.init
    assert torch.equal(torch.get_rng_state(), state)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert dict(vars(torch.nn.init)) == init_functions
    # the same build draws its weights again once loading is over
    torch.nn.Linear(3, 2)
    assert not torch.equal(torch.get_rng_state(), state)
    # a refused checkpoint leaves torch.nn.init as it was too
    payload = checkpoint_payload(model, "resnet18")
    del payload["state_dict"]["fc.bias"]
    torch.save(payload, path)
    with pytest.raises(dv.WeightsError, match="missing keys: fc.bias"):
        dv.load_model("resnet18", weights=path)
    assert dict(vars(torch.nn.init)) == init_functions
