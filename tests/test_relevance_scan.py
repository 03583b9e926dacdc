"""Relevance maximisation (scan --rank relevance) and the crp command, end to end on the
bundled photos with ZFNet (random weights) at 64 pixels."""
import os
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from conftest import EXAMPLES, zoo_model

import deconvviz as dv
from deconvviz.cli import cli

PHOTOS = sorted(os.path.join(EXAMPLES, f) for f in os.listdir(EXAMPLES)
                if f.endswith((".png", ".jpg")))


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    model = zoo_model("zfnet")
    prep = replace(dv.model_info(model).preprocessing, resize_size=64, crop_size=64)
    out = str(tmp_path_factory.mktemp("scan") / "scan.pt")
    result = dv.scan(model, PHOTOS, layers=["conv4", "conv5"], hits=2, batch_size=3, progress=False,
                     preprocessing=prep, rank="relevance", out=out)
    return model, prep, result, out


def test_relevance_hits_are_each_images_share_for_its_predicted_class(scanned):
    model, prep, result, out = scanned
    assert result.has_relevance and result.relevance_meta == {"method": "lrp",
                                                              "target": "predicted"}
    x = torch.cat([dv.load_image(p, preprocessing=prep)[0] for p in PHOTOS])
    # one image at a time (the scan ran batches of 3): the same shares, to 1e-4 of the
    # largest (float32; PyTorch picks convolution kernels by batch size, and a share divides
    # by a sum of absolute values with cancellation in it)
    shares = {layer: torch.cat([dv.layer_relevance(model, x[i:i + 1], layer=layer).share
                                for i in range(len(PHOTOS))]) for layer in ("conv4", "conv5")}
    for layer in ("conv4", "conv5"):
        for feature in (0, 7, 100):
            column = shares[layer][:, feature]
            order = [i for i in column.argsort(descending=True).tolist() if column[i] > 0][:2]
            hits = result.relevance_top(layer, feature)
            assert [h.image for h in hits] == [PHOTOS[i] for i in order]
            for hit, i in zip(hits, order):
                assert abs(hit.value - float(column[i])) <= 1e-4 * float(column.abs().max())
    # the activation ranking is kept beside it, and both survive a save
    again = dv.load_scan(out)
    assert again.relevance_top("conv5", 7) == result.relevance_top("conv5", 7)
    assert again.top("conv5", 7) == result.top("conv5", 7)
    with pytest.raises(dv.ArgumentError, match="rank is one of activation, relevance"):
        dv.scan(model, PHOTOS[:1], layers=["conv5"], rank="relevant", progress=False)


def test_crp_command_draws_concepts_with_reference_patches(scanned, tmp_path):
    _, _, _, scan_path = scanned
    out = str(tmp_path / "crp.png")
    run = CliRunner().invoke(cli, ["crp", "--model", "zfnet", "--weights", "none", "-l",
                                   "conv5", "--top", "2", "--references", "2", "--scan",
                                   scan_path, "-o", out, PHOTOS[0]])
    assert run.exit_code == 0, run.output
    assert os.path.getsize(out) > 10_000
    bad = CliRunner().invoke(cli, ["crp", "--model", "zfnet", "--weights", "none", "-l",
                                   "conv5", "--method", "guided", "-o", out, PHOTOS[0]])
    assert bad.exit_code == 2 and "LRP method" in bad.output


def test_atlas_unit_pages_show_relevance_beside_activation(scanned, tmp_path):
    model, _, result, _ = scanned
    site = dv.atlas(result, str(tmp_path / "site"), model=model, layers=["conv5"],
                    progress=False)
    unit = next(f for f in range(result.features("conv5")) if result.relevance_top("conv5", f))
    page = open(site.unit_page("conv5", unit), encoding="utf-8").read()
    assert '<div class="side"><section class="hits">' in page  # side by side
    assert "Most relevant images (relevance maximisation)" in page
    for rank, hit in enumerate(result.relevance_top("conv5", unit)):
        assert f"u{unit}_rel{rank}.jpg" in page
        assert os.path.getsize(tmp_path / "site" / "conv5" / "img" / f"u{unit}_rel{rank}.jpg")
        assert f"{100 * hit.value:.2f}% of the relevance" in page
