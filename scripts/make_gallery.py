"""Regenerate the figures of docs/gallery.md: python scripts/make_gallery.py"""
import os

import deconvviz as dv
from deconvviz import figures
from deconvviz.analyses import project_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, "examples", "images")
OUT = os.path.join(ROOT, "docs", "gallery")


def photo(name: str) -> str:
    return os.path.join(PHOTOS, name)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    dpi = 90
    zfnet = dv.load_model("zfnet", weights=None)
    dv.project(zfnet, photo("chelsea.png"), layer="conv3").save(os.path.join(OUT, "zfnet_conv3.png"),
                                                          dpi=dpi)
    resnet = dv.load_model("resnet50", weights=None)
    dv.project(resnet, photo("coffee.png"), layer="layer2", top=8).save(
        os.path.join(OUT, "resnet50_layer2_patches.png"), patches=True, dpi=dpi)
    vgg = dv.load_model("vgg16", weights=None)
    rows = project_layers(vgg, photo("rocket.jpg"), ["conv1_2", "conv2_2", "conv3_3", "conv4_3",
                                                     "conv5_3"], top=6)
    # as `deconvviz show --layer ...` draws it: each row cropped to its receptive field
    # where the field is at most half the image (the default view, "auto")
    overview = figures.layer_overview(rows, crop=[r.crops_by_default() for r in rows])
    figures.save_figure(overview, os.path.join(OUT, "vgg16_overview.png"), dpi=dpi)
    googlenet = dv.load_model("googlenet", weights=None)
    dv.project(googlenet, photo("grace_hopper.jpg"), layer="inception3b", top=8).save(
        os.path.join(OUT, "googlenet_inception3b_heatmap.png"), scaling="heatmap", dpi=dpi)
    result = dv.scan(zfnet, PHOTOS, layers=["conv5"], hits=4, progress=False)
    fig = result.figure("conv5", "0-7", model=zfnet)
    figures.save_figure(fig, os.path.join(OUT, "zfnet_scan_conv5.png"), dpi=dpi)
    for name in sorted(os.listdir(OUT)):
        print(os.path.join("docs", "gallery", name))


if __name__ == "__main__":
    main()
