"""The ``deconvviz`` command: a thin layer over the Python API.

Errors are one line on stderr starting with ``error:``; exit code 2 for bad usage or bad input
(every ``ValueError`` deconvviz raises), 1 for anything else. ``--debug`` shows the traceback.

Start-up is instant: this module imports only click and deconvviz's light modules (the zoo's
names, the choices, output checks); torch and matplotlib are imported by a command once its
arguments have been checked.
"""
from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import List, Optional

import click

from ._io import FIGURE_FORMATS, check_output_folder, check_output_path, figure_paths
from .choices import (
    INITS,
    MAX_TOP,
    METHODS,
    MODES,
    PAPER_SAVE_AT,
    REVERSE_METHODS,
    SCALINGS,
    TILE_SCALINGS,
    TRANSFORMS,
    parse_features,
    parse_list,
)
from .data.zoo import get_spec, list_models
from .errors import ArgumentError, Interrupted, first_line

__all__ = ["main", "cli"]


class _InputError(click.ClickException):
    exit_code = 2


class _Interrupted(click.ClickException):
    exit_code = 130  # the shell's code for Ctrl-C


class _OneLineErrors(click.Group):
    """Every error becomes one ``error:`` line (click's own usage errors included)."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)  # errors are always handled here
        try:
            result = super().main(args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(result if isinstance(result, int) else 0)


def _friendly(command):
    """Turn exceptions into one-line errors unless --debug is given."""

    @functools.wraps(command)
    def wrapper(*args, debug: bool = False, **kwargs):
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _one_line_warning
            try:
                return command(*args, **kwargs)
            except click.ClickException:
                raise
            except Interrupted as exc:  # saved where it was; the message says --resume
                if debug:
                    raise
                raise _Interrupted(_one_line(exc)) from None
            except ValueError as exc:  # every deconvviz input error is a ValueError
                if debug:
                    raise
                raise _InputError(_one_line(exc)) from None
            except OSError as exc:  # a file that vanished, a disk that filled up
                if debug:
                    raise
                raise click.ClickException(f"{exc.strerror or exc}"
                                           + (f": {exc.filename}" if exc.filename else "")
                                           ) from None
            except Exception as exc:
                if debug:
                    raise
                raise click.ClickException(f"{type(exc).__name__}: {_one_line(exc)}") from None

    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        # re-raised from a DataLoader worker: the original message is the last line
        return lines[-1].split(": ", 1)[-1]
    return first_line(exc)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """deconvviz's own warnings, one line each; other libraries' (deprecations, a missing
    glyph) are not the user's business unless --debug shows everything."""
    if getattr(category, "__module__", "").startswith("deconvviz"):
        click.echo(f"warning: {message}", err=True)


def _weights_option(f):
    return click.option("--weights", default="default", show_default=True, metavar="WEIGHTS",
                        help="'default' (torchvision's ImageNet weights), 'none' (random), "
                             "or a checkpoint FILE.")(f)


def _dpi_option(f):
    return click.option("--dpi", default=200, show_default=True, type=click.IntRange(10, 2400),
                        help="Resolution of raster output (10 to 2400).")(f)


def _device_option(f):
    return click.option("--device", default="auto", show_default=True,
                        help="'cpu', 'cuda', 'cuda:1', ... or 'auto' (cuda when available).")(f)


def _method_option(f):
    return click.option("--method", type=click.Choice(REVERSE_METHODS), default="deconvnet",
                        show_default=True,
                        help="The reverse pass: the deconvnet, guided backprop or the "
                             "plain gradient.")(f)


def _model_option(f):
    return click.option("--model", "-m", required=True, metavar="NAME",
                        help=f"A zoo model: {', '.join(list_models())}.")(f)


@click.group(cls=_OneLineErrors, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deconvviz")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Zeiler-Fergus deconvnet visualisations of CNN features.

    \b
    Examples:
      deconvviz show --model zfnet --layer conv3 photo.jpg
      deconvviz layers --model vgg16
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command("models")
@_friendly
def models_command() -> None:
    """List the model zoo: name, parameters, whether ImageNet weights exist, and whether they
    are already in the torch hub cache (else the first use downloads them)."""
    from .data.zoo import cached_weights, count_parameters

    click.echo(f"{'model':<12} {'parameters':>12}  {'imagenet weights':<18} cached")
    for name in list_models():
        spec = get_spec(name)
        weights = "yes (torchvision)" if spec.imagenet_weights is not None else "no (random init)"
        path = cached_weights(name)
        cached = "-" if spec.imagenet_weights is None else ("yes" if path else "no (downloads)")
        click.echo(f"{name:<12} {count_parameters(name):>12,}  {weights:<18} {cached}")


@cli.command("layers")
@_model_option
@click.option("--input-size", default=224, show_default=True, help="Side of the square input.")
@click.option("--all", "all_modules", is_flag=True, help="List every module path, not only aliases.")
@_friendly
def layers_command(model: str, input_size: int, all_modules: bool) -> None:
    """List a model's layers: alias, module path, output shape and receptive field."""
    get_spec(model)
    from .engine import list_layers

    rows = list_layers(model, input_size=input_size, all_modules=all_modules)
    click.echo(f"{'alias':<14} {'path':<30} {'shape':<18} {'rf size':>7} {'rf stride':>9}")
    for layer in rows:
        shape = "x".join(str(s) for s in layer.shape)
        stride = str(layer.rf_stride) if layer.rf_stride is not None else "-"
        click.echo(f"{layer.alias or '-':<14} {layer.path:<30} {shape:<18} "
                   f"{layer.rf_size:>7} {stride:>9}")


@cli.command("show")
@_model_option
@click.option("--layer", "-l", required=True,
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
@_method_option
@click.option("--patches", is_flag=True, help="Pair each projection with its receptive-field patch.")
@click.option("--out", "-o", default=None, metavar="PATH",
              help="Output .png/.jpg/.pdf/.svg. With several images: PATH's stem gets "
                   "_<image> appended, unless --combine.")
@click.option("--combine", is_flag=True, help="Several images in one figure.")
@_dpi_option
@_weights_option
@_device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@_friendly
def show_command(model: str, layer: str, top: Optional[int], features: Optional[str], mode: str,
                 scaling: str, view: str, method: str, patches: bool, out: Optional[str],
                 combine: bool, dpi: int, weights: str, device: str,
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

    from .analyses import show
    from .data.devices import resolve_device
    from .data.zoo import load_model

    net_model = load_model(model, weights=weights).to(resolve_device(device))
    with tqdm(total=len(images), desc="images", unit="img", file=sys.stderr,
              disable=len(images) < 2) as bar:
        report = show(net_model, images, layer, features=chosen, top=top, mode=mode,
                      scaling=scaling, patches=patches, view=view, out=out, combine=combine,
                      dpi=dpi, method=method, on_image=lambda _: bar.update())
    for path in report.written:
        click.echo(path)
    for _image, reason in report.failed:
        click.echo(f"error: {reason}", err=True)
    if report.failed:
        sys.exit(2)


@cli.command("scan", short_help="The top activations of every feature across a folder of images.")
@_model_option
@click.option("--layers", "-l", required=True, help="Comma list of layers, e.g. conv1,conv3,conv5.")
@click.option("--top", default=9, show_default=True, type=click.IntRange(1),
              help="Hits kept per feature.")
@click.option("--out", "-o", required=True, metavar="RESULT", help="Where to write the result.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0),
              help="DataLoader worker processes.")
@click.option("--resume", is_flag=True, help="Continue from RESULT.partial after an interruption.")
@click.option("--checkpoint-every", default=256, show_default=True, metavar="N",
              type=click.IntRange(1), help="Images between checkpoints.")
@_weights_option
@_device_option
@click.argument("source", type=click.Path())
@_friendly
def scan_command(model: str, layers: str, top: int, out: str, batch_size: int, workers: int,
                 resume: bool, checkpoint_every: int, weights: str, device: str,
                 source: str) -> None:
    """Find the strongest activations of every feature of LAYERS across SOURCE (a folder of
    images, searched recursively, or a text file listing image paths).

    Under torchrun (--nproc_per_node=N) the ranks scan disjoint shards and merge their results.
    """
    get_spec(model)
    check_output_path(out, formats=None)
    from .analyses import scan
    from .data.devices import distributed
    from .data.zoo import load_model

    names = parse_list(layers, "--layers")
    with distributed(device) as (rank, dev):
        net_model = load_model(model, weights=weights).to(dev)
        result = scan(net_model, source, names, top=top, batch_size=batch_size, workers=workers,
                      out=out, resume=resume, checkpoint_every=checkpoint_every)
        if rank == 0:
            if result.skipped:
                click.echo(f"warning: skipped {len(result.skipped)} unreadable file(s):",
                           err=True)
                for path, why in result.skipped[:10]:
                    click.echo(f"  {path}: {why}", err=True)
                if len(result.skipped) > 10:
                    click.echo(f"  and {len(result.skipped) - 10} more (result.skipped in "
                               f"Python lists them all)", err=True)
            click.echo(out)


@cli.command("figure", short_help="Redraw Zeiler & Fergus Fig. 2 from a scan result.")
@click.argument("result_path", metavar="RESULT", type=click.Path())
@click.option("--layer", "-l", default=None, help="Layer(s) of the scan, comma list "
                                                  "[default: all of them].")
@click.option("--features", default="0-15", show_default=True, metavar="LIST",
              help="Feature indices (3,17,40-47) or random:N for a seeded random subset.")
@click.option("--seed", default=0, show_default=True, help="Seed for random:N.")
@click.option("--scaling", type=click.Choice(SCALINGS), default="signed",
              show_default=True, help="Display convention.")
@click.option("--ncols", default=4, show_default=True, type=click.IntRange(1),
              help="Features per row.")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@_dpi_option
@_method_option
@_weights_option
@_device_option
@_friendly
def figure_command(result_path: str, layer: Optional[str], features: str, seed: int,
                   scaling: str, ncols: int, out: str, dpi: int, method: str, weights: str,
                   device: str) -> None:
    """Redraw Zeiler & Fergus Fig. 2 from a scan RESULT: each feature's top-9 projections
    beside the image patches that caused them. --weights defaults to the scan's own."""
    check_output_path(out, FIGURE_FORMATS)
    if not features.startswith("random:"):
        parse_features(features)
    from .analyses import load_scan
    from .data.devices import resolve_device
    from .data.zoo import load_model
    from .figures import save_figure

    result = load_scan(result_path)
    own = weights == "default"  # the CLI default: the weights the scan used
    model = load_model(result.model, weights=result.weights_argument if own else weights)
    fig = result.figure(parse_list(layer, "--layer") if layer else None, features, seed=seed,
                        model=model.to(resolve_device(device)), scaling=scaling, ncols=ncols,
                        method=method, progress=True)
    click.echo(save_figure(fig, out, dpi=dpi))


@cli.command("atlas", short_help="A static website of every unit of a scan.")
@click.argument("result_path", metavar="RESULT", type=click.Path())
@click.option("--out", "-o", required=True, metavar="FOLDER",
              help="The site's folder (created; an earlier atlas there is replaced).")
@click.option("--layer", "-l", default=None, help="Layer(s) of the scan, comma list "
                                                  "[default: all of them].")
@click.option("--scaling", type=click.Choice(TILE_SCALINGS), default="signed",
              show_default=True, help="Display convention of the projections.")
@click.option("--image-format", type=click.Choice(["jpg", "webp"]), default="jpg",
              show_default=True, help="The tiles' format.")
@_method_option
@_weights_option
@_device_option
@_friendly
def atlas_command(result_path: str, out: str, layer: Optional[str], scaling: str,
                  image_format: str, method: str, weights: str, device: str) -> None:
    """Write a static website of every unit of a scan RESULT: an index, a page per layer
    (every unit's strongest hit, sortable by activation and by how often it fires) and a
    page per unit (its hits beside their projections, its distribution). It opens from the
    file system with no server and no network. --weights defaults to the scan's own.

    Under torchrun (--nproc_per_node=N) the processes share the images.
    """
    names = parse_list(layer, "--layer") if layer else None
    check_output_folder(out, "atlas.json")
    from .analyses import atlas, load_scan
    from .data.devices import distributed
    from .data.zoo import load_model

    result = load_scan(result_path)
    for name in names or []:
        result.features(name)  # an unknown layer is named before the model is built
    with distributed(device) as (rank, dev):
        model = None
        if weights != "default" or result.weights != "user":
            model = load_model(result.model, weights=result.weights_argument
                               if weights == "default" else weights).to(dev)
        site = atlas(result, out, model=model, layers=names, method=method, scaling=scaling,
                     image_format=image_format)
        if rank == 0:
            t = site.timings
            click.echo(f"{sum(len(l.units) for l in site.layers):,} units, {t['hits']:,} hits "
                       f"from {t['images']:,} images; {t['files']:,} files, "
                       f"{t['bytes'] / 1e6:.1f} MB; projections {t['projection']:.1f} s, "
                       f"writing {t['writing']:.1f} s", err=True)
            click.echo(site.index)


def _target_options(f):
    for option in reversed([
        click.option("--target", default=None, metavar="CLASS",
                     help="A class index or ImageNet class name [default: each image's "
                          "top-1 class]."),
        click.option("--layer", "-l", default=None,
                     help="Explain a unit of this layer instead of a class."),
        click.option("--feature", default=None, type=click.IntRange(0),
                     help="The unit's feature (with --layer)."),
        click.option("--mode", type=click.Choice(MODES), default="max", show_default=True,
                     help="The unit's strongest activation, or its whole map."),
    ]):
        f = option(f)
    return f


def _methods(spec: Optional[str], default) -> List[str]:
    names = parse_list(spec, "--methods") if spec else list(default)
    bad = [n for n in names if n not in METHODS]
    if bad:
        raise ArgumentError(f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}")
    return names


@cli.command("compare", short_help="Every method's attribution side by side.")
@_model_option
@_target_options
@click.option("--methods", default=None, metavar="LIST",
              help=f"Comma list of {', '.join(METHODS)} [default: deconvnet, guided, "
                   f"gradient, gradcam, guided_gradcam].")
@click.option("--cam-layer", default=None, help="Grad-CAM's layer [default: the last "
                                                "convolutional block].")
@click.option("--out", "-o", required=True, metavar="PATH",
              help="Output .png/.jpg/.pdf/.svg, or .npz for the maps.")
@_dpi_option
@_weights_option
@_device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@_friendly
def compare_command(model: str, target: Optional[str], layer: Optional[str],
                    feature: Optional[int], mode: str, methods: Optional[str],
                    cam_layer: Optional[str], out: str, dpi: int, weights: str, device: str,
                    images: List[str]) -> None:
    """One row per IMAGE, one column per method, explaining the same class (or unit): the
    layout of Grad-CAM's Fig. 1 and Springenberg's Fig. 2."""
    get_spec(model)
    names = _methods(methods, ("deconvnet", "guided", "gradient", "gradcam", "guided_gradcam"))
    check_output_path(out, FIGURE_FORMATS + (".npz",))
    if (layer is None) != (feature is None):
        raise ArgumentError("a unit target needs both --layer and --feature")
    from .analyses import compare
    from .data.devices import resolve_device
    from .data.zoo import load_model

    net_model = load_model(model, weights=weights).to(resolve_device(device))
    from tqdm import tqdm

    with tqdm(total=len(names), desc=f"compare ({len(images)} images)", unit="method",
              file=sys.stderr) as bar:
        result = compare(net_model, images, names, target=target, layer=layer,
                         feature=feature, mode=mode, cam_layer=cam_layer,
                         progress=lambda _: bar.update())
    click.echo(result.save(out, dpi=dpi))


@cli.command("sanity", short_help="Adebayo's sanity check: randomise the layers, top down.")
@_model_option
@click.option("--methods", default=None, metavar="LIST",
              help=f"Comma list of {', '.join(METHODS)} [default: deconvnet, guided, "
                   f"gradient, gradcam].")
@click.option("--target", default=None, metavar="CLASS",
              help="A class index or name [default: the image's top-1 class].")
@click.option("--seed", default=0, show_default=True, help="Seed of the re-initialisations.")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@click.option("--csv", "csv_path", default=None, metavar="PATH", help="Also write the scores.")
@_dpi_option
@_weights_option
@_device_option
@click.argument("image", type=click.Path())
@_friendly
def sanity_command(model: str, methods: Optional[str], target: Optional[str], seed: int,
                   out: str, csv_path: Optional[str], dpi: int, weights: str, device: str,
                   image: str) -> None:
    """Cascading model-parameter randomisation (Adebayo et al., 2018) on IMAGE: re-initialise
    the layers one by one from the logits down, and measure how much each method's map
    changes (Spearman rank correlation and SSIM against the original map)."""
    get_spec(model)
    names = _methods(methods, ("deconvnet", "guided", "gradient", "gradcam"))
    check_output_path(out, FIGURE_FORMATS)
    if csv_path is not None:
        check_output_path(csv_path, (".csv",))
    from tqdm import tqdm

    from .analyses import sanity_check
    from .data.devices import resolve_device
    from .data.images import load_image
    from .data.zoo import load_model

    dev = resolve_device(device)
    net_model = load_model(model, weights=weights).to(dev)
    x, _ = load_image(image, net_model)
    from .analyses.sanity import parametrised_layers

    steps = 1 + len(parametrised_layers(net_model))
    with tqdm(total=steps * len(names), desc="sanity (layers x methods)", unit="map",
              file=sys.stderr) as bar:
        result = sanity_check(net_model, x.to(dev), names, target=target, seed=seed,
                              progress=lambda _: bar.update())
    click.echo(result.save(out, dpi=dpi))
    if csv_path is not None:
        click.echo(result.save(csv_path))


def _load(model: str, weights: str, device: str, images: List[str]):
    """The model on its device and the images as one batch (after the arguments are checked:
    this is where torch is imported)."""
    import torch

    from .data.devices import resolve_device
    from .data.images import load_image
    from .data.zoo import load_model

    dev = resolve_device(device)
    net_model = load_model(model, weights=weights).to(dev)
    return net_model, torch.cat([load_image(p, net_model)[0] for p in images]).to(dev)


@cli.command("occlude", short_help="Occlusion sensitivity (Zeiler & Fergus Fig. 7).")
@_model_option
@click.option("--layer", "-l", default=None,
              help="The layer whose feature map is summed [default: the top convolutional "
                   "layer].")
@click.option("--feature", default=None, type=click.IntRange(0),
              help="The feature map [default: the strongest in the unoccluded image].")
@click.option("--target", default=None, metavar="CLASS",
              help="A class index or ImageNet class name [default: the top-1 class].")
@click.option("--size", default=48, show_default=True, type=click.IntRange(1),
              help="The grey square's side in pixels.")
@click.option("--stride", default=8, show_default=True, type=click.IntRange(1),
              help="Its step in pixels.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--out", "-o", required=True, metavar="PATH",
              help="Output .png/.jpg/.pdf/.svg, or .npz for the maps.")
@_dpi_option
@_weights_option
@_device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@_friendly
def occlude_command(model: str, layer: Optional[str], feature: Optional[int],
                    target: Optional[str], size: int, stride: int, batch_size: int, out: str,
                    dpi: int, weights: str, device: str, images: List[str]) -> None:
    """Slide a grey square over each IMAGE: a feature's activity, the class probability and
    the predicted class at each position, in the paper's five panels. One forward pass per
    position."""
    get_spec(model)
    check_output_path(out, FIGURE_FORMATS + (".npz",))
    from tqdm import tqdm

    from .analyses import occlusion

    net_model, x = _load(model, weights, device, images)
    if size > min(x.shape[-2:]):
        raise ArgumentError(f"the occluder ({size} px) is larger than the image "
                            f"({x.shape[-2]}x{x.shape[-1]})")
    positions = ((x.shape[-2] - size) // stride + 1) * ((x.shape[-1] - size) // stride + 1)
    with tqdm(total=max(positions, 0) * x.shape[0], desc="positions", unit="pos",
              file=sys.stderr) as bar:
        result = occlusion(net_model, x, layer, feature, target, size=size, stride=stride,
                           batch_size=batch_size, progress=bar.update)
    click.echo(result.save(out, dpi=dpi))


@cli.command("invariance", short_help="Translation, scale and rotation (Zeiler & Fergus Fig. 5).")
@_model_option
@click.option("--transform", default=",".join(TRANSFORMS), show_default=True, metavar="LIST",
              help=f"Comma list of {', '.join(TRANSFORMS)}.")
@click.option("--layers", "-l", default=None,
              help="Comma list [default: the first convolutional and last hidden fully-"
                   "connected layer].")
@click.option("--target", default=None, metavar="CLASS",
              help="A class index or name [default: each image's top-1 class].")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@click.option("--csv", "csv_path", default=None, metavar="PATH", help="Also write the numbers.")
@_dpi_option
@_weights_option
@_device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@_friendly
def invariance_command(model: str, transform: str, layers: Optional[str],
                       target: Optional[str], out: str, csv_path: Optional[str], dpi: int,
                       weights: str, device: str, images: List[str]) -> None:
    """How far each layer's activations move, and the class probability, as each IMAGE is
    translated vertically, scaled or rotated: one row of Fig. 5 per transform."""
    get_spec(model)
    transforms = parse_list(transform, "--transform")
    bad = [t for t in transforms if t not in TRANSFORMS]
    if bad:
        raise ArgumentError(f"unknown transform {(bad or [transform])[0]!r}; choose from "
                            f"{', '.join(TRANSFORMS)}")
    check_output_path(out, FIGURE_FORMATS)
    if csv_path is not None:
        check_output_path(csv_path, (".csv",))
    from .analyses import invariance
    from .figures import invariance_figure, save_figure

    net_model, x = _load(model, weights, device, images)
    names = parse_list(layers, "--layers") if layers else None
    results = [invariance(net_model, x, t, layers=names, target=target, images=images)
               for t in transforms]
    click.echo(save_figure(invariance_figure(results), out, dpi=dpi))
    if csv_path is not None:
        from ._io import write_atomically

        header, *rows = results[0].table().splitlines()
        for result in results[1:]:
            rows += result.table().splitlines()[1:]
        text = "\n".join([header, *rows]).encode() + b"\n"
        click.echo(write_atomically(csv_path, lambda f: f.write(text)))


@cli.command("correspondence", short_help="Part correspondence (Zeiler & Fergus Table 1).")
@_model_option
@click.option("--parts", required=True, type=click.Path(),
              help='A JSON file {"part": [[x, y, w, h], ...], ...}: one box per IMAGE, in '
                   'the pixels of the crop the model sees.')
@click.option("--layers", "-l", default=None,
              help="Comma list [default: the first convolutional and last hidden fully-"
                   "connected layer].")
@click.option("--random", "draws", default=10, show_default=True, type=click.IntRange(1),
              help="Draws of the random baseline.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random baseline.")
@click.option("--out", "-o", required=True, metavar="PATH",
              help="The table as .md, .csv or .tex, or the boxes' figure as .png/.pdf/.svg.")
@_dpi_option
@_weights_option
@_device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@_friendly
def correspondence_command(model: str, parts: str, layers: Optional[str], draws: int,
                           seed: int, out: str, dpi: int, weights: str, device: str,
                           images: List[str]) -> None:
    """Mask the same part in several IMAGES of one kind of object and measure how
    consistently it changes each layer's representation (lower is more consistent), against
    masking random boxes."""
    import json

    get_spec(model)
    check_output_path(out, (".md", ".csv", ".tex") + FIGURE_FORMATS)
    try:
        with open(parts, encoding="utf-8") as handle:
            boxes = json.load(handle)
    except OSError as exc:
        raise ArgumentError(f"cannot read the parts file {parts}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ArgumentError(f"{parts} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if len(images) < 2:
        raise ArgumentError("correspondence needs at least two images of one kind of object")
    if out.lower().endswith(FIGURE_FORMATS):  # the boxes only: the model need not run
        from .analyses.correspondence import parts_figure
        from .figures import save_figure

        click.echo(save_figure(parts_figure(get_spec(model).name, images, boxes), out,
                               dpi=dpi))
        return
    from .analyses import correspondence

    net_model, x = _load(model, weights, device, images)
    names = parse_list(layers, "--layers") if layers else None
    result = correspondence(net_model, x, boxes, names, random=draws, seed=seed)
    click.echo(result.save(out, dpi=dpi))


@cli.command("train", short_help="Train a zoo model on an image folder (the paper's recipe).")
@_model_option
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
@_device_option
@click.option("--seed", default=0, show_default=True, help="Seeds weights, order, augmentation.")
@click.option("--save-at", default=",".join(map(str, PAPER_SAVE_AT)), show_default=True,
              metavar="LIST", help="Epochs whose checkpoints are kept (the last always is).")
@click.option("--keep-all", is_flag=True, help="Keep every epoch's checkpoint.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN from its last.pt.")
@click.option("--checkpoint-every", default=1000, show_default=True, type=click.IntRange(1),
              metavar="STEPS", help="Steps between saves of last.pt within an epoch.")
@click.option("--amp/--no-amp", default=None,
              help="bfloat16 mixed precision [default: on with CUDA, off on the CPU].")
@_friendly
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
    from .analyses import train

    result = train(model, data, out, val=val, epochs=epochs, batch_size=batch_size, lr=lr,
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
@click.option("--layers", "-l", required=True, help="Comma list, e.g. conv1,conv2,conv3.")
@click.option("--features", default="random:6", show_default=True, metavar="LIST",
              help="Per layer: indices (3,17,40-47) or random:N (seeded).")
@click.option("--seed", default=0, show_default=True, help="Seed for random:N.")
@click.option("--model", "-m", default=None, metavar="NAME",
              help="The zoo model [default: the one the checkpoints record].")
@_method_option
@click.option("--scaling", type=click.Choice(SCALINGS), default="signed",
              show_default=True, help="Display convention.")
@click.option("--patches", is_flag=True, help="Pair each projection with its image patch.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--out", "-o", required=True, metavar="PATH",
              help="Output .png/.jpg/.pdf/.svg, or .npz for the arrays.")
@_dpi_option
@_device_option
@_friendly
def evolution_command(checkpoints: List[str], data: str, layers: str, features: str,
                      seed: int, model: Optional[str], method: str, scaling: str,
                      patches: bool, batch_size: int, out: str, dpi: int,
                      device: str) -> None:
    """Zeiler & Fergus Fig. 4 from CHECKPOINTS: a run folder (its epoch_K.pt files, in
    epoch order) or checkpoint files in the order to draw them. For each checkpoint, each
    feature's strongest activation across --data is projected to pixels."""
    if model is not None:
        get_spec(model)
    check_output_path(out, FIGURE_FORMATS + (".npz",))
    if not features.startswith("random:"):
        parse_features(features)
    names = parse_list(layers, "--layers")
    from tqdm import tqdm

    from .analyses import evolution, run_checkpoints
    from .data.devices import resolve_device

    source = run_checkpoints(checkpoints[0]) if len(checkpoints) == 1 and \
        os.path.isdir(checkpoints[0]) else list(checkpoints)
    with tqdm(total=len(source), desc="checkpoints", unit="ckpt", file=sys.stderr) as bar:
        result = evolution(model, source, data, names, features, seed=seed, method=method,
                           batch_size=batch_size, device=str(resolve_device(device)),
                           progress=False, on_checkpoint=lambda _: bar.update())
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
@click.option("--layer", "-l", default=None,
              help="The conv layer (path or alias) [default: the first convolution].")
@click.option("--scaling", type=click.Choice(["layer", "filter"]), default="layer",
              show_default=True, help="One scale per panel, or per filter.")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@click.option("--csv", "csv_path", default=None, metavar="PATH",
              help="Also write each filter's RMS, dead flag and high-frequency share.")
@_dpi_option
@_friendly
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
    for name in models:
        get_spec(name)
    check_output_path(out, FIGURE_FORMATS)
    if csv_path is not None:
        check_output_path(csv_path, (".csv",))
    from .analyses import filters
    from .data.zoo import load_model

    result = filters([load_model(m, weights=w) for m, w in zip(models, weights)], layer)
    click.echo(result.save(out, dpi=dpi, scaling=scaling))
    if csv_path is not None:
        click.echo(result.save(csv_path))
    for line in result.summary():
        click.echo(line, err=True)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="deconvviz")


if __name__ == "__main__":  # pragma: no cover
    main()
