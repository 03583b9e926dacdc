"""Draw docs/figures/vit_unit.png: one unit of ViT-B/16's encoder layer 5 (torchvision's
``vit_b_16`` with RANDOM weights: nothing is downloaded, and nothing here is a learnt feature),
its strongest token in each example photo (the token's 16-px patch outlined, the deconvnet's
projection of that one unit beside it: the whole image, as every token past attention sees
it), the unit at the class token, and its optimised image (feature visualisation). With
random weights the residual stream dominates: a patch token's projection lands mostly on its
own patch though its field is the whole image; the class token's, which reaches the image
through attention alone, spreads over all of it.

    python scripts/transformers_figure.py

The unit is the one of encoder layer 5 whose strongest patch is strongest over the photos.
"""
from __future__ import annotations

import glob
import os

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import deconvviz as dv  # noqa: E402
from deconvviz.figures.display import to_uint8  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "figures", "vit_unit.png")
LAYER = "encoder.layers.encoder_layer_5"


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = dv.load_model("torchvision:vit_b_16", weights=None)
    net = dv.Deconvnet(model)
    photos = sorted(glob.glob(os.path.join(ROOT, "examples", "images", "*.[pj][np]g")))
    x, rgb, _ = dv.engine.passes.recording.images_for(model, photos)
    rec = net.record(x, LAYER)
    act = rec.activations[LAYER]  # [N, 768, 14, 14]: the patch tokens on their grid
    unit = int(act.flatten(2).amax(2).amax(0).argmax())
    layer = net.layer(LAYER)
    shown = [dv.project(model, photo, layer=LAYER, features=[unit], net=net)
             for photo in photos]
    at_cls = dv.project(model, photos[0], layer=LAYER, features=[unit], net=net, token="cls")
    optimised = dv.feature_vis(model, LAYER, features=[unit], steps=48, image_size=224)
    columns = len(photos) + 2
    fig, axes = plt.subplots(2, columns, figsize=(2.2 * columns, 5.6))
    for k, result in enumerate(shown):
        y, x_ = (int(v) for v in result.positions[0])
        top, left, h, w = layer.patches.window(y, x_)
        axes[0, k].imshow(result.rgb)
        axes[0, k].add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False,
                                       edgecolor="yellow", linewidth=1.5))
        axes[0, k].set_title(f"{os.path.basename(photos[k])}\ntoken ({y}, {x_}): "
                             f"{result.values[0]:.2f}", fontsize=7)
        axes[1, k].imshow(to_uint8(result.pixels[0], "signed"))
        axes[1, k].set_title("its deconvnet projection", fontsize=7)
    axes[0, -2].imshow(at_cls.rgb)
    axes[0, -2].set_title(f"{os.path.basename(photos[0])}\nthe class token: "
                          f"{at_cls.values[0]:.2f}", fontsize=7)
    axes[1, -2].imshow(to_uint8(at_cls.pixels[0], "signed"))
    axes[1, -2].set_title("its deconvnet projection", fontsize=7)
    axes[0, -1].imshow(optimised.image(unit))
    axes[0, -1].set_title("optimised image\n(48 steps, Lucid's regularisers)", fontsize=7)
    axes[1, -1].axis("off")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"ViT-B/16 (torchvision, RANDOM weights), {LAYER}, unit {unit}: "
                 f"{layer.shape_label}, each token sees the whole image", fontsize=9)
    fig.tight_layout(h_pad=1.5)
    fig.savefig(OUT, dpi=110)
    print(OUT, f"unit {unit}")


if __name__ == "__main__":
    main()
