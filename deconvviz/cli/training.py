"""Training and what reads its runs: ``train``, ``evolution`` (Fig. 4), ``filters`` (Fig. 6)."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import click

from .._io import DATA_FORMATS, FIGURE_FORMATS, check_output_path, result_formats
from ..choices import (
    INITS,
    PAPER_SAVE_AT,
    SCALINGS,
    check_weights,
    parse_features,
    parse_list,
)
from ..data.zoo import get_spec
from ..errors import ArgumentError
from .base import (
    check_layer,
    check_layers,
    cli,
    device_option,
    dpi_option,
    friendly,
    method_option,
    model_option,
)

__all__: list = []  # commands, registered on deconvviz.cli.cli


@cli.command("train", short_help="Train a zoo model on an image folder (the paper's recipe).")
@model_option
@click.argument("data", type=click.Path())
@click.option("--val", default=None, type=click.Path(),
              help="A validation image folder with the same classes.")
@click.option("--out", "-o", required=True, metavar="RUN",
              help="The run folder: epoch_K.pt checkpoints, metrics.csv, last.pt.")
@click.option("--epochs", default=70, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1),
              help="The global mini-batch (split across torchrun processes).")
@click.option("--lr", default=1e-2, show_default=True, type=click.FloatRange(0, min_open=True),
              help="SGD's learning rate, divided by 10 when the validation error plateaus.")
@click.option("--momentum", default=0.9, show_default=True,
              type=click.FloatRange(0, 1, max_open=True))
@click.option("--weight-decay", default=0.0, show_default=True, type=click.FloatRange(0))
@click.option("--dropout", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="Dropout probability of every dropout layer [default: the model's, 0.5 "
                   "in fc6/fc7]; 0 turns it off.")
@click.option("--clip-rms", default=0.1, show_default=True, type=click.FloatRange(0),
              help="Renormalise conv filters whose RMS exceeds this after each step; 0: off.")
@click.option("--init", type=click.Choice(INITS), default="auto", show_default=True,
              help="auto: the paper's N(0, 1e-2) for ZFNet, the model's own otherwise; "
                   "normal: N(0, 1e-2) everywhere; kaiming: He et al.'s.")
@click.option("--resize", "resize_size", default=None, type=click.IntRange(1),
              help="Short side before cropping [default: 256].")
@click.option("--crop", "crop_size", default=None, type=click.IntRange(1),
              help="Random crop side [default: 224].")
@click.option("--workers", default=None, type=click.IntRange(0),
              help="DataLoader worker processes per process [default: 4, or the number of "
                   "CPU cores if fewer].")
@device_option
@click.option("--seed", default=0, show_default=True, help="Seeds weights, order, augmentation.")
@click.option("--save-at", default=",".join(map(str, PAPER_SAVE_AT)), show_default=True,
              metavar="LIST", help="Epochs whose checkpoints are kept (the last always is).")
@click.option("--keep-all", is_flag=True, help="Keep every epoch's checkpoint.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN from its last.pt.")
@click.option("--checkpoint-every", default=1000, show_default=True, type=click.IntRange(1),
              metavar="STEPS", help="Steps between saves of last.pt within an epoch.")
@click.option("--amp/--no-amp", default=None,
              help="bfloat16 mixed precision [default: on with CUDA, off on the CPU].")
@friendly
def train_command(model: str, data: str, val: Optional[str], out: str, epochs: int,
                  batch_size: int, lr: float, momentum: float, weight_decay: float,
                  dropout: Optional[float], clip_rms: float, init: str,
                  resize_size: Optional[int], crop_size: Optional[int], workers: int,
                  device: str, seed: int, save_at: str, keep_all: bool, resume: bool,
                  checkpoint_every: int, amp: Optional[bool]) -> None:
    """Train MODEL from scratch on DATA, an image folder with one sub-folder per class
    (ImageNet's or Imagenette's layout). The defaults are Zeiler & Fergus's recipe.

    Under torchrun (--nproc_per_node=N) the processes share each batch
    (DistributedDataParallel). Every checkpoint works with every command's --weights.
    """
    get_spec(model)
    epochs_kept = parse_features(save_at)  # the same "1,2,5-10" syntax as features
    if workers is None:  # more workers than cores only makes PyTorch warn
        workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1))
    from ..training import train

    result = train(model, data, out=out, val=val, epochs=epochs, batch_size=batch_size, lr=lr,
                   momentum=momentum, weight_decay=weight_decay, dropout=dropout,
                   clip_rms=clip_rms, init=init, resize_size=resize_size,
                   crop_size=crop_size, workers=workers, device=device, seed=seed,
                   save_at=epochs_kept, keep_all=keep_all, resume=resume,
                   checkpoint_every=checkpoint_every, amp=amp)
    if int(os.environ.get("RANK", "0")) == 0:
        for path in result.checkpoints:
            click.echo(path)


@cli.command("evolution", short_help="Feature evolution over checkpoints (Zeiler & Fergus Fig. 4).")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--data", required=True, type=click.Path(),
              help="The images to find each feature's strongest activation in.")
@click.option("--layers", "-l", required=True, callback=check_layers,
              help="Comma list, e.g. conv1,conv2,conv3.")
@click.option("--features", default="random:6", show_default=True, metavar="LIST",
              help="Per layer: indices (3,17,40-47) or random:N (seeded).")
@click.option("--seed", default=0, show_default=True, help="Seed for random:N.")
@click.option("--model", "-m", default=None, metavar="NAME",
              help="The zoo model [default: the one the checkpoints record].")
@method_option
@click.option("--scaling", type=click.Choice(SCALINGS), default="signed",
              show_default=True, help="Display convention.")
@click.option("--patches", is_flag=True, help="Pair each projection with its image patch.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--out", "-o", required=True, metavar="PATH",
              help="Output .png/.jpg/.pdf/.svg, or .npz for the arrays.")
@dpi_option
@device_option
@friendly
def evolution_command(checkpoints: List[str], data: str, layers: str, features: str,
                      seed: int, model: Optional[str], method: str, scaling: str,
                      patches: bool, batch_size: int, out: str, dpi: int,
                      device: str) -> None:
    """Zeiler & Fergus Fig. 4 from CHECKPOINTS: a run folder (its epoch_K.pt files, in
    epoch order) or checkpoint files in the order to draw them. For each checkpoint, each
    feature's strongest activation across --data is projected to pixels."""
    if model is not None:
        get_spec(model)
    check_output_path(out, result_formats("evolution"))
    if not features.startswith("random:"):
        parse_features(features)
    names = parse_list(layers, "--layers")
    from tqdm import tqdm

    from ..analyses import evolution
    from ..data.devices import resolve_device
    from ..data.runs import run_checkpoints

    source = run_checkpoints(checkpoints[0]) if len(checkpoints) == 1 and \
        os.path.isdir(checkpoints[0]) else list(checkpoints)
    with tqdm(total=len(source), desc="checkpoints", unit="ckpt", file=sys.stderr) as bar:
        result = evolution(model, data, checkpoints=source, layers=names, features=features,
                           seed=seed, method=method, batch_size=batch_size,
                           device=str(resolve_device(device)),
                           progress=lambda *_: bar.update())
    if out.lower().endswith(".npz"):
        click.echo(result.save(out))
    else:
        click.echo(result.save(out, dpi=dpi, scaling=scaling, patches=patches))


@cli.command("filters", short_help="First-layer filters and their statistics (Fig. 6 a-c).")
@click.option("--model", "-m", "models", multiple=True, required=True, metavar="NAME",
              help="A zoo model; repeat it to pair each with a --weights.")
@click.option("--weights", "weights", multiple=True, metavar="WEIGHTS",
              help="'default', 'none' or a checkpoint FILE; repeat it for several panels "
                   "[default: default].")
@click.option("--layer", "-l", default=None, callback=check_layer,
              help="The conv layer (path or alias) [default: the first convolution].")
@click.option("--scaling", type=click.Choice(["layer", "filter"]), default="layer",
              show_default=True, help="One scale per panel, or per filter.")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@click.option("--csv", "csv_path", default=None, metavar="PATH",
              help="Also write each filter's RMS, dead flag and high-frequency share.")
@dpi_option
@friendly
def filters_command(models: List[str], weights: List[str], layer: Optional[str],
                    scaling: str, out: str, csv_path: Optional[str], dpi: int) -> None:
    """Draw the first-layer filters of one or several models or checkpoints side by side,
    with the statistics behind the paper's diagnosis: RMS, dead filters and the share of
    energy above half the Nyquist frequency (aliasing)."""
    models, weights = list(models), list(weights) or ["default"]
    if len(models) == 1:
        models = models * len(weights)
    elif len(weights) == 1:
        weights = weights * len(models)
    if len(models) != len(weights):
        raise ArgumentError(f"{len(models)} --model for {len(weights)} --weights: give one "
                            f"model, one weights, or as many of each")
    for name, weight in zip(models, weights):
        get_spec(name)
        check_weights(weight)
    check_output_path(out, FIGURE_FORMATS)
    if csv_path is not None:
        check_output_path(csv_path, DATA_FORMATS["filters"])
    from ..analyses import filters
    from ..data.zoo import load_model

    result = filters([load_model(m, weights=w) for m, w in zip(models, weights)], layer)
    click.echo(result.save(out, dpi=dpi, scaling=scaling))
    if csv_path is not None:
        click.echo(result.save(csv_path))
    for line in result.summary():
        click.echo(line, err=True)
