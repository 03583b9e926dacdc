"""Commands that list models and layers and draw a layer's features: ``models``, ``layers``,
``show`` (projections) and ``optimize`` (feature visualisation by optimisation)."""
from __future__ import annotations

import sys
from typing import List, Optional

import click

from .._io import FIGURE_FORMATS, check_output_path, figure_paths
from .._progress import StepEstimate
from ..choices import (
    FV_PARAMETRISATIONS,
    MAX_TOP,
    MODES,
    SCALINGS,
    check_feature_vis_options,
    parse_features,
)
from ..data.zoo import get_spec, list_models
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
    weights_option,
)

__all__: list = []  # commands, registered on deconvviz.cli.cli


@cli.command("models")
@friendly
def models_command() -> None:
    """List the model zoo: name, parameters, whether ImageNet weights exist, and whether they
    are already in the torch hub cache (else the first use downloads them)."""
    from ..data.zoo import cached_weights, count_parameters

    click.echo(f"{'model':<12} {'parameters':>12}  {'imagenet weights':<18} cached")
    for name in list_models():
        spec = get_spec(name)
        weights = "yes (torchvision)" if spec.imagenet_weights is not None else "no (random init)"
        path = cached_weights(name)
        cached = "-" if spec.imagenet_weights is None else ("yes" if path else "no (downloads)")
        click.echo(f"{name:<12} {count_parameters(name):>12,}  {weights:<18} {cached}")
    click.echo("Beyond the zoo: --model torchvision:NAME for any torchvision classification "
               "model (e.g. torchvision:efficientnet_b0), timm:NAME when timm is installed.")


@cli.command("layers")
@model_option
@click.option("--input-size", default=None, type=click.IntRange(1), metavar="N",
              help="Side of the square input [default: the model's own, from its weights' "
                   "transforms: 224 for most, 299 for Inception-v3, 300 for EfficientNet-B3].")
@click.option("--all", "all_modules", is_flag=True, help="List every module path, not only aliases.")
@friendly
def layers_command(model: str, input_size: Optional[int], all_modules: bool) -> None:
    """List a model's layers: alias, module path, output shape (channels first, whatever the
    memory layout) and receptive field."""
    get_spec(model)
    from ..engine import list_layers

    rows = list_layers(model, input_size=input_size, all_modules=all_modules)
    table = [("alias", "path", "shape", "rf size", "rf stride")] + [
        (layer.alias or "-", layer.path,
         layer.shape_label + ("*" if layer.features is None else ""),
         str(layer.rf_size), str(layer.rf_stride) if layer.rf_stride is not None else "-")
        for layer in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]  # the longest entry
    for row in table:
        click.echo(" ".join([f"{cell:<{w}}" for cell, w in zip(row[:3], widths)]
                            + [f"{cell:>{w}}" for cell, w in zip(row[3:], widths[3:])]))
    refused = [layer.no_features for layer in rows if layer.no_features]
    click.echo("Shapes are channels x height x width, whatever the memory layout: a layer's "
               "features are its channels.")
    if any(layer.tokens is not None and layer.tokens.prefix for layer in rows):
        click.echo("Tokens (a vision transformer's) are read on the patch grid: +cls (+dist, "
                   "+N reg) are the named tokens, positions of their own.")
    if refused:
        click.echo(f"* no features ({len(refused)} layers), e.g.: {refused[0]}")


@cli.command("show")
@model_option
@click.option("--layer", "-l", required=True, callback=check_layers,
              help="Alias or module path; a comma list, or 'all', for one row per layer.")
@click.option("--top", default=None, type=click.IntRange(1, MAX_TOP),
              help="The N strongest features [default: 16; 6 per layer with several layers].")
@click.option("--features", default=None, metavar="LIST", help="Feature indices, e.g. 3,17,40-47.")
@click.option("--mode", type=click.Choice(MODES), default="max", show_default=True,
              help="Project the strongest activation only, or the whole feature map.")
@click.option("--scaling", type=click.Choice(SCALINGS), default="signed",
              show_default=True, help="Display convention.")
@click.option("--view", type=click.Choice(["auto", "crop", "full"]), default="auto",
              show_default=True,
              help="crop: each projection cropped to its receptive field and enlarged (the "
                   "paper's view); full: the whole frame; auto: crop where the field is at "
                   "most half the image.")
@method_option
@click.option("--patches", is_flag=True, help="Pair each projection with its receptive-field patch.")
@click.option("--token", default=None, metavar="NAME",
              help="A vision transformer's named token (cls; dist, reg0 where the model has "
                   "them) to project each feature at, instead of its strongest patch.")
@click.option("--out", "-o", default=None, metavar="PATH",
              help="Output .png/.jpg/.pdf/.svg, or a folder (one ending in / or an existing "
                   "one) for the default names. With several images: PATH's stem gets "
                   "_<image> appended, unless --combine.")
@click.option("--combine", is_flag=True, help="Several images in one figure.")
@dpi_option
@weights_option
@device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@friendly
def show_command(model: str, layer: str, top: Optional[int], features: Optional[str], mode: str,
                 scaling: str, view: str, method: str, patches: bool, out: Optional[str],
                 token: Optional[str], combine: bool, dpi: int, weights: str, device: str,
                 images: List[str]) -> None:
    """Draw projections (deconvnet, guided backprop or gradient) of a layer's features for
    each IMAGE.

    An unreadable IMAGE is reported and skipped; the others are drawn, and the exit code is
    2 at the end.
    """
    if top is not None and features is not None:
        raise ArgumentError("give --top or --features, not both")
    chosen = parse_features(features) if features else None
    name = get_spec(model).name
    for path in figure_paths(images, name, layer, out, combine):
        check_output_path(path, FIGURE_FORMATS)
    from tqdm import tqdm

    from ..analyses import show
    from ..data.devices import resolve_device
    from ..data.zoo import load_model

    net_model = load_model(model, weights=weights).to(resolve_device(device))
    with tqdm(total=len(images), desc="images", unit="img", file=sys.stderr,
              disable=len(images) < 2) as bar:
        report = show(net_model, images, layer=layer, features=chosen, top=top, mode=mode,
                      scaling=scaling, patches=patches, view=view, out=out, combine=combine,
                      dpi=dpi, method=method, progress=lambda *_: bar.update(), token=token)
    for path in report.written:
        click.echo(path)
    for _image, reason in report.failed:
        click.echo(f"error: {reason}", err=True)
    if report.failed:
        sys.exit(2)


@cli.command("optimize")
@model_option
@click.option("--layer", "-l", default=None, callback=check_layer,
              help="Alias or module path (not with --objective logit).")
@click.option("--features", default="0-15", show_default=True, metavar="LIST",
              help="Units to visualise, e.g. 0-63 or 3,17,40-47 (class indices with "
                   "--objective logit).")
@click.option("--objective", type=click.Choice(["channel", "neuron", "logit"]),
              default="channel", show_default=True,
              help="A feature map's mean, its centre activation, or a class's logit.")
@click.option("--negative", is_flag=True, help="Minimise the objective instead.")
@click.option("--param", type=click.Choice(FV_PARAMETRISATIONS), default="fourier",
              show_default=True, help="Optimise a 1/f-scaled spectrum, or raw pixels.")
@click.option("--no-decorrelate", is_flag=True,
              help="Optimise red, green and blue independently (not through ImageNet's "
                   "colour correlation).")
@click.option("--no-transforms", is_flag=True,
              help="No random pad, jitter, scale and rotation at each step.")
@click.option("--steps", default=512, show_default=True, type=click.IntRange(1),
              help="Adam steps.")
@click.option("--lr", default=0.05, show_default=True, type=click.FloatRange(min=0,
              min_open=True), help="Adam's learning rate.")
@click.option("--image-size", default=128, show_default=True, type=click.IntRange(8),
              help="Side of the optimised image, resized to the model's input.")
@click.option("--input-size", default=None, type=click.IntRange(8),
              help="Side of the model's input [default: its preprocessing's crop].")
@click.option("--images-per-unit", default=1, show_default=True, type=click.IntRange(1),
              help="Images per unit (with --diversity, different facets of it).")
@click.option("--diversity", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the Gram-matrix penalty between a unit's images.")
@click.option("--seed", default=0, show_default=True, help="Seed of the images and transforms.")
@click.option("--out", "-o", default="feature_vis.png", show_default=True, metavar="PATH",
              help="The grid (.png/.jpg/.pdf/.svg), or the images (.npz).")
@dpi_option
@weights_option
@device_option
@friendly
def optimize_command(model: str, layer: Optional[str], features: str, objective: str,
                     negative: bool, param: str, no_decorrelate: bool, no_transforms: bool,
                     steps: int, lr: float, image_size: int, input_size: Optional[int],
                     images_per_unit: int, diversity: float, seed: int, out: str, dpi: int,
                     weights: str, device: str) -> None:
    """Draw the image each unit of a layer wants: feature visualisation by optimisation
    (Olah et al. 2017, Lucid's defaults), all units optimised together in one batch. A run
    of more than 30 s says how long it will take once its first steps are measured (on a
    CPU, Lucid's 512 steps of 64 VGG16 units take about a day; --steps 128 and a smaller
    model take minutes).

    \b
    Examples:
      deconvviz optimize --model alexnet --layer conv5 --features 0-7 --steps 128 --out grid.png
      deconvviz optimize --model vgg16 --layer conv5_3 --features 0-63 --out grid.png
      deconvviz optimize --model alexnet --objective logit --features 281 --out tabby.png
    """
    from .._io import result_formats

    units = parse_features(features, names=objective == "logit")
    if objective == "logit" and layer is not None:
        raise ArgumentError("--objective logit reads the model's output: leave out --layer")
    if objective != "logit" and layer is None:
        raise ArgumentError("give --layer (see `deconvviz layers --model NAME`)")
    check_feature_vis_options(objective, steps=steps, images_per_unit=images_per_unit,
                              image_size=image_size, lr=lr, diversity=diversity)
    check_output_path(out, result_formats("feature_vis"))
    get_spec(model)
    from tqdm import tqdm

    from ..analyses import feature_vis
    from ..analyses.fv_image import LUCID_TRANSFORMS
    from ..data.devices import resolve_device
    from ..data.zoo import load_model

    dev = resolve_device(device)
    net_model = load_model(model, weights=weights).to(dev)
    bars: list = []  # the progress bar, opened at the first step (after the checks)

    def bar(done: int, total: int, label: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="image steps", unit="step", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    progress = StepEstimate(lambda line: tqdm.write(line, file=sys.stderr), steps=steps,
                            device=dev.type, then=bar,
                            hint="--steps fewer for a quicker look")
    try:
        result = feature_vis(net_model, layer, features=units, objective=objective,
                             negative=negative,
                             param=param, decorrelate=not no_decorrelate,
                             transforms=None if no_transforms else LUCID_TRANSFORMS,
                             steps=steps, lr=lr, image_size=image_size, input_size=input_size,
                             images_per_unit=images_per_unit, diversity=diversity, seed=seed,
                             progress=progress)
    finally:
        for opened in bars:
            opened.close()
    click.echo(result.save(out, dpi=dpi) if not out.lower().endswith(".npz")
               else result.save(out))
