"""The docs' Fig. 4 and Fig. 6 from short training runs on the synthetic shapes folder.

These are demonstrations of the commands, labelled as such: ZFNet trained for a few epochs
on 96 generated images of three coloured shapes, not on ImageNet. Runs on a CPU in a few
minutes:

    .venv/bin/python scripts/make_training_figures.py        # writes docs/figures/*_synthetic.png
"""
from __future__ import annotations

import os
import tempfile

import deconvviz as dv
from deconvviz.data.synthetic import make_shapes
from deconvviz.figures import save_figure

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURES = os.path.join(HERE, "..", "docs", "figures")
SMALL = dict(batch_size=8, resize_size=64, crop_size=56, workers=0, progress=False)


def main() -> None:
    tmp = tempfile.mkdtemp()
    train, val = os.path.join(tmp, "train"), os.path.join(tmp, "val")
    make_shapes(train, per_class=32, size=64, seed=0)
    make_shapes(val, per_class=8, size=64, seed=1)
    run = dv.train("zfnet", train, os.path.join(tmp, "run"), val=val, epochs=10,
                   init="kaiming", dropout=0.2, save_at=[1, 2, 5], **SMALL)
    print(run)
    evo = dv.evolution("zfnet", run.run, val, ["conv1", "conv2", "conv5"], "random:4",
                       progress=False)
    fig = evo.figure()
    fig.suptitle("ZFNet on synthetic shapes (96 images, 3 classes; not ImageNet): feature "
                 "evolution, Fig. 4 layout", fontsize=8.5)
    print(save_figure(fig, os.path.join(FIGURES, "fig4_synthetic.png"), dpi=150))
    # Fig. 6 (a)/(c): the same high learning rate without and with renormalisation
    models, labels = [], []
    for clip in (0.0, 0.1):
        blown = dv.train("zfnet", train, os.path.join(tmp, f"lr02_clip{clip}"), epochs=1,
                         lr=0.2, dropout=0.0, init="kaiming", clip_rms=clip, save_at=[],
                         **SMALL)
        models.append(dv.load_model("zfnet", weights=blown.checkpoints[-1]))
        labels.append(f"lr 0.2, 1 epoch, {'no renormalisation' if clip == 0 else 'RMS 0.1'}")
    models.append(dv.load_model("zfnet", weights=run.checkpoints[-1]))
    labels.append("lr 0.01, 10 epochs, RMS 0.1")
    result = dv.filters(models, labels=labels)
    for line in result.summary():
        print(line)
    fig = result.figure()
    fig.suptitle("ZFNet conv1 filters after training on synthetic shapes (not ImageNet), "
                 "Fig. 6 layout", fontsize=8.5)
    print(save_figure(fig, os.path.join(FIGURES, "fig6_synthetic.png"), dpi=150))


if __name__ == "__main__":
    main()
