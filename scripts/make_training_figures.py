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
    run = dv.train("zfnet", train, out=os.path.join(tmp, "run"), val=val, epochs=10,
                   init="kaiming", dropout=0.2, save_at=[1, 2, 5], **SMALL)
    print(run)
    evo = dv.evolution("zfnet", checkpoints=run.run, images=val, layers=["conv1", "conv2", "conv5"], features="random:4",
                       progress=False)
    fig = evo.figure()
    fig.suptitle("Feature evolution (Fig. 4 layout): ZFNet on synthetic shapes\n"
                 "96 images, 3 classes, 56-px crops - not ImageNet", fontsize=8.5)
    print(save_figure(fig, os.path.join(FIGURES, "fig4_synthetic.png"), dpi=150))
    # Fig. 6 (a)/(b): six steps at a high learning rate, without and with renormalisation
    # (on 48 images, as the tests do: more steps at this rate overflow without it)
    small = os.path.join(tmp, "small")
    make_shapes(small, per_class=16, size=64, seed=0)
    models, labels = [], []
    for clip in (0.0, 0.1):
        blown = dv.train("zfnet", small, out=os.path.join(tmp, f"lr02_clip{clip}"), epochs=1,
                         lr=0.2, dropout=0.0, init="kaiming", clip_rms=clip, save_at=[],
                         **SMALL)
        models.append(dv.load_model("zfnet", weights=blown.checkpoints[-1]))
        labels.append(f"lr 0.2, 6 steps, {'no renorm.' if clip == 0 else 'RMS 0.1'}")
    models.append(dv.load_model("zfnet", weights=run.checkpoints[-1]))
    labels.append("lr 0.01, 10 epochs, RMS 0.1")
    result = dv.filters(models, labels=labels)
    for line in result.summary():
        print(line)
    fig = result.figure()
    fig.suptitle("ZFNet conv1 filters (Fig. 6 layout) after training on synthetic shapes "
                 "- not ImageNet", fontsize=8.5)
    print(save_figure(fig, os.path.join(FIGURES, "fig6_synthetic.png"), dpi=150))


if __name__ == "__main__":
    main()
