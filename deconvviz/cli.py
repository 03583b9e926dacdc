"""The ``deconvviz`` command: a thin layer over the Python API.

Errors are one line on stderr starting with ``error:``; exit code 2 for bad usage or bad input
(every ``ValueError`` deconvviz raises), 1 for anything else. ``--debug`` shows the traceback.
"""
from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import List, Optional

import click
import torch

from . import figures
from .deconvnet import Deconvnet
from .errors import ArgumentError
from .layers import overview_layers
from .visualize import parse_features, project, project_layers
from .zoo import count_parameters, get_spec, list_models, load_model

__all__ = ["main", "cli"]


class _InputError(click.ClickException):
    exit_code = 2


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
            warnings.showwarning = _one_line_warning
            try:
                return command(*args, **kwargs)
            except click.ClickException:
                raise
            except ValueError as exc:  # every deconvviz input error is a ValueError
                if debug:
                    raise
                raise _InputError(_one_line(exc)) from None
            except Exception as exc:
                if debug:
                    raise
                raise click.ClickException(f"{type(exc).__name__}: {_one_line(exc)}") from None

    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


def _weights_option(f):
    return click.option("--weights", default="default", show_default=True, metavar="WEIGHTS",
                        help="'default' (torchvision's ImageNet weights), 'none' (random), "
                             "or a checkpoint FILE.")(f)


def _device_option(f):
    return click.option("--device", default="auto", show_default=True,
                        help="'cpu', 'cuda', 'cuda:1', ... or 'auto' (cuda when available).")(f)


def _model_option(f):
    return click.option("--model", "-m", required=True, metavar="NAME",
                        help=f"A zoo model: {', '.join(list_models())}.")(f)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ArgumentError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("--device cuda asked for, but CUDA is not available here; use cpu")
    return device


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deconvviz")
def cli() -> None:
    """Zeiler-Fergus deconvnet visualisations of CNN features.

    \b
    Examples:
      deconvviz show --model zfnet --layer conv3 photo.jpg
      deconvviz layers --model vgg16
    """


@cli.command("models")
@_friendly
def models_command() -> None:
    """List the model zoo: name, parameters, and whether ImageNet weights exist."""
    click.echo(f"{'model':<12} {'parameters':>12}  imagenet weights")
    for name in list_models():
        spec = get_spec(name)
        weights = "yes (torchvision)" if spec.imagenet_weights is not None else "no (random init)"
        click.echo(f"{name:<12} {count_parameters(name):>12,}  {weights}")


@cli.command("layers")
@_model_option
@click.option("--input-size", default=224, show_default=True, help="Side of the square input.")
@click.option("--all", "all_modules", is_flag=True, help="List every module path, not only aliases.")
@_friendly
def layers_command(model: str, input_size: int, all_modules: bool) -> None:
    """List a model's layers: alias, module path, output shape and receptive field."""
    from .layers import list_layers

    get_spec(model)
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
@click.option("--top", default=None, type=int, help="The N strongest features [default: 16; "
                                                    "6 per layer with several layers].")
@click.option("--features", default=None, metavar="LIST", help="Feature indices, e.g. 3,17,40-47.")
@click.option("--mode", type=click.Choice(["max", "map"]), default="max", show_default=True,
              help="Project the strongest activation only, or the whole feature map.")
@click.option("--scaling", type=click.Choice(list(figures.SCALINGS)), default="signed",
              show_default=True, help="Display convention.")
@click.option("--patches", is_flag=True, help="Pair each projection with its receptive-field patch.")
@click.option("--out", "-o", default=None, metavar="PATH",
              help="Output .png/.jpg/.pdf/.svg. With several images: PATH's stem gets "
                   "_<image> appended, unless --combine.")
@click.option("--combine", is_flag=True, help="Several images in one figure.")
@click.option("--dpi", default=200, show_default=True, help="Resolution of raster output.")
@_weights_option
@_device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@_friendly
def show_command(model: str, layer: str, top: Optional[int], features: Optional[str], mode: str,
                 scaling: str, patches: bool, out: Optional[str], combine: bool, dpi: int,
                 weights: str, device: str, images: List[str]) -> None:
    """Draw deconvnet projections of a layer's features for each IMAGE."""
    from tqdm import tqdm

    if top is not None and features is not None:
        raise ArgumentError("give --top or --features, not both")
    if top is not None and top < 1:
        raise ArgumentError(f"--top must be at least 1, got {top}")
    chosen = parse_features(features) if features else None
    get_spec(model)
    layers = [s.strip() for s in layer.split(",") if s.strip()]
    if layer == "all":
        layers = overview_layers(get_spec(model).aliases)
    overview = len(layers) > 1
    if overview and (chosen is not None or patches):
        raise ArgumentError("--features and --patches need a single --layer")
    outputs = _output_paths(images, model, layer, out, combine)
    for path in set(outputs):
        figures.check_output_path(path)
    dev = _device(device)
    net_model = load_model(model, weights=weights).to(dev)
    net = Deconvnet(net_model)

    def draw(image_path: str):
        if overview:
            results = project_layers(net_model, image_path, layers, top=top or 6, mode=mode,
                                     net=net)
            return lambda fig=None: figures.layer_overview(results, scaling=scaling, fig=fig)
        result = project(net_model, image_path, layers[0], features=chosen, top=top or 16,
                         mode=mode, net=net)
        return lambda fig=None: result.figure(scaling, patches=patches, fig=fig)

    drawings = [draw(p) for p in tqdm(images, desc="images", unit="img", file=sys.stderr,
                                      disable=len(images) < 2)]
    if combine:
        first = drawings[0]()
        height = first.get_size_inches()[1]
        written = [figures.save_figure(figures.combine(drawings, height=height), outputs[0],
                                       dpi=dpi)]
    else:
        written = [figures.save_figure(d(), path, dpi=dpi) for d, path in zip(drawings, outputs)]
    for path in written:
        click.echo(path)


@cli.command("scan", short_help="The top activations of every feature across a folder of images.")
@_model_option
@click.option("--layers", "-l", required=True, help="Comma list of layers, e.g. conv1,conv3,conv5.")
@click.option("--top", default=9, show_default=True, help="Hits kept per feature.")
@click.option("--out", "-o", required=True, metavar="RESULT", help="Where to write the result.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--workers", default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--resume", is_flag=True, help="Continue from RESULT.partial after an interruption.")
@click.option("--checkpoint-every", default=256, show_default=True, metavar="N",
              help="Images between checkpoints.")
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
    from .scan import scan

    get_spec(model)
    names = [s.strip() for s in layers.split(",") if s.strip()]
    rank, dev = _init_distributed(device)
    try:
        net_model = load_model(model, weights=weights).to(dev)
        result = scan(net_model, source, names, top=top, batch_size=batch_size, workers=workers,
                      out=out, resume=resume, checkpoint_every=checkpoint_every)
        if rank == 0:
            if result.skipped:
                click.echo(f"warning: skipped {len(result.skipped)} unreadable file(s); see "
                           f"result.skipped", err=True)
            click.echo(out)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _init_distributed(device: str):
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    dev = _device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, dev
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), dev


@cli.command("figure", short_help="Redraw Zeiler & Fergus Fig. 2 from a scan result.")
@click.argument("result_path", metavar="RESULT", type=click.Path())
@click.option("--layer", "-l", default=None, help="Layer(s) of the scan, comma list "
                                                  "[default: all of them].")
@click.option("--features", default="0-15", show_default=True, metavar="LIST",
              help="Feature indices (3,17,40-47) or random:N for a seeded random subset.")
@click.option("--seed", default=0, show_default=True, help="Seed for random:N.")
@click.option("--scaling", type=click.Choice(list(figures.SCALINGS)), default="signed",
              show_default=True, help="Display convention.")
@click.option("--ncols", default=4, show_default=True, help="Features per row.")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@click.option("--dpi", default=200, show_default=True, help="Resolution of raster output.")
@_weights_option
@_device_option
@_friendly
def figure_command(result_path: str, layer: Optional[str], features: str, seed: int,
                   scaling: str, ncols: int, out: str, dpi: int, weights: str,
                   device: str) -> None:
    """Redraw Zeiler & Fergus Fig. 2 from a scan RESULT: each feature's top-9 projections
    beside the image patches that caused them. --weights defaults to the scan's own."""
    from .scan import load_scan

    result = load_scan(result_path)
    figures.check_output_path(out)
    own = weights == "default"  # the CLI default: the weights the scan used
    model = load_model(result.model, weights=result.weights_argument if own else weights)
    fig = figures.figure_from_scan(result, layer.split(",") if layer else None, features,
                                   seed=seed, model=model.to(_device(device)),
                                   scaling=scaling, ncols=ncols)
    click.echo(figures.save_figure(fig, out, dpi=dpi))


def _output_paths(images: List[str], model: str, layer: str, out: Optional[str],
                  combine: bool) -> List[str]:
    tag = "all" if layer == "all" else layer.replace(",", "+").replace("/", "_")
    if out is None:
        if combine:
            return [f"combined_{model}_{tag}.png"]
        return [f"{os.path.splitext(os.path.basename(p))[0]}_{model}_{tag}.png" for p in images]
    if combine or len(images) == 1:
        return [out]
    stem, ext = os.path.splitext(out)
    return [f"{stem}_{os.path.splitext(os.path.basename(p))[0]}{ext}" for p in images]


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="deconvviz")
