"""The paper's analyses: ``occlude`` (Fig. 7), ``invariance`` (Fig. 5), ``correspondence``
(Table 1)."""
from __future__ import annotations

import sys
from typing import List, Optional

import click

from .._io import DATA_FORMATS, FIGURE_FORMATS, check_output_path, result_formats
from ..choices import (
    TRANSFORMS,
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
    load_images_and_model,
    model_option,
    weights_option,
)

__all__: list = []  # commands, registered on deconvviz.cli.cli


@cli.command("occlude", short_help="Occlusion sensitivity (Zeiler & Fergus Fig. 7).")
@model_option
@click.option("--layer", "-l", default=None, callback=check_layer,
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
@click.option("--plain", is_flag=True,
              help="One full forward pass per position, instead of recomputing only the "
                   "window of each layer that the square can change (the same results; on a "
                   "GPU the plain passes are already chosen where they are faster).")
@click.option("--out", "-o", required=True, metavar="PATH",
              help="Output .png/.jpg/.pdf/.svg, or .npz for the maps.")
@dpi_option
@weights_option
@device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@friendly
def occlude_command(model: str, layer: Optional[str], feature: Optional[int],
                    target: Optional[str], size: int, stride: int, batch_size: int,
                    plain: bool, out: str, dpi: int, weights: str, device: str,
                    images: List[str]) -> None:
    """Slide a grey square over each IMAGE: a feature's activity, the class probability and
    the predicted class at each position, in the paper's five panels. One forward pass of
    the unoccluded image keeps every layer's activations; each position then recomputes only
    the window of each layer that the square can change (--plain: a full pass per
    position; on a GPU, plain passes wherever the windows are over 40% of the work)."""
    get_spec(model)
    check_output_path(out, result_formats("occlusion"))
    from tqdm import tqdm

    from ..analyses import occlusion

    net_model, x = load_images_and_model(model, weights, device, images)
    if size > min(x.shape[-2:]):
        raise ArgumentError(f"the occluder ({size} px) is larger than the image "
                            f"({x.shape[-2]}x{x.shape[-1]})")
    positions = ((x.shape[-2] - size) // stride + 1) * ((x.shape[-1] - size) // stride + 1)
    with tqdm(total=max(positions, 0) * x.shape[0], desc="positions", unit="pos",
              file=sys.stderr) as bar:
        result = occlusion(net_model, x, layer=layer, features=feature, target=target,
                           size=size, stride=stride, batch_size=batch_size,
                           progress=lambda done, total, label: bar.update(done - bar.n),
                           incremental=False if plain else None)
    click.echo(result.save(out, dpi=dpi))


@cli.command("invariance", short_help="Translation, scale and rotation (Zeiler & Fergus Fig. 5).")
@model_option
@click.option("--transform", default=",".join(TRANSFORMS), show_default=True, metavar="LIST",
              help=f"Comma list of {', '.join(TRANSFORMS)}.")
@click.option("--layers", "-l", default=None, callback=check_layers,
              help="Comma list [default: the first convolutional and last hidden fully-"
                   "connected layer].")
@click.option("--target", default=None, metavar="CLASS",
              help="A class index or name [default: each image's top-1 class].")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@click.option("--csv", "csv_path", default=None, metavar="PATH", help="Also write the numbers.")
@dpi_option
@weights_option
@device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@friendly
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
        check_output_path(csv_path, DATA_FORMATS["invariance"])
    from ..analyses import invariance
    from ..figures import invariance_figure, save_figure

    net_model, x = load_images_and_model(model, weights, device, images)
    names = parse_list(layers, "--layers") if layers else None
    results = [invariance(net_model, x, transform=t, layers=names, target=target,
                          labels=images)
               for t in transforms]
    click.echo(save_figure(invariance_figure(results), out, dpi=dpi))
    if csv_path is not None:
        from .._io import write_atomically

        header, *rows = results[0].table().splitlines()
        for result in results[1:]:
            rows += result.table().splitlines()[1:]
        text = "\n".join([header, *rows]).encode() + b"\n"
        click.echo(write_atomically(csv_path, lambda f: f.write(text)))


@cli.command("correspondence", short_help="Part correspondence (Zeiler & Fergus Table 1).")
@model_option
@click.option("--parts", required=True, type=click.Path(),
              help='A JSON file {"part": [[x, y, w, h], ...], ...}: one box per IMAGE, in '
                   'the pixels of the crop the model sees.')
@click.option("--layers", "-l", default=None, callback=check_layers,
              help="Comma list [default: the first convolutional and last hidden fully-"
                   "connected layer].")
@click.option("--random", "draws", default=10, show_default=True, type=click.IntRange(1),
              help="Draws of the random baseline.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random baseline.")
@click.option("--out", "-o", required=True, metavar="PATH",
              help="The table as .md, .csv or .tex, or the boxes' figure as .png/.pdf/.svg.")
@dpi_option
@weights_option
@device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@friendly
def correspondence_command(model: str, parts: str, layers: Optional[str], draws: int,
                           seed: int, out: str, dpi: int, weights: str, device: str,
                           images: List[str]) -> None:
    """Mask the same part in several IMAGES of one kind of object and measure how
    consistently it changes each layer's representation (lower is more consistent), against
    masking random boxes."""
    import json

    get_spec(model)
    check_output_path(out, result_formats("correspondence"))
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
        from ..analyses.correspondence import parts_figure
        from ..figures import save_figure

        click.echo(save_figure(parts_figure(get_spec(model).name, images, boxes), out,
                               dpi=dpi))
        return
    from ..analyses import correspondence

    net_model, x = load_images_and_model(model, weights, device, images)
    names = parse_list(layers, "--layers") if layers else None
    result = correspondence(net_model, x, parts=boxes, layers=names, random=draws, seed=seed)
    click.echo(result.save(out, dpi=dpi))
