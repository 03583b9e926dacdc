"""Commands over an image collection: ``scan``, ``figure`` (Zeiler & Fergus Fig. 2) and
``atlas`` (a website of every unit)."""
from __future__ import annotations

from typing import Optional

import click

from .._io import FIGURE_FORMATS, check_output_folder, check_output_path
from .._progress import StepEstimate
from ..choices import (
    SCALINGS,
    TILE_SCALINGS,
    check_relevance_options,
    parse_features,
    parse_list,
)
from ..data.zoo import get_spec
from ..errors import ArgumentError
from .base import (
    check_layers,
    cli,
    device_option,
    dpi_option,
    friendly,
    image_root_option,
    method_option,
    model_option,
    scan_weights_option,
    weights_option,
)

__all__: list = []  # commands, registered on deconvviz.cli.cli


@cli.command("scan", short_help="The top activations of every feature across a folder of images.")
@model_option
@click.option("--layers", "-l", required=True, callback=check_layers,
              help="Comma list of layers, e.g. conv1,conv3,conv5.")
@click.option("--hits", "--top", "top", default=9, show_default=True, type=click.IntRange(1),
              help="Hits kept per feature (--top: its old name, kept one release).")
@click.option("--out", "-o", required=True, metavar="RESULT", help="Where to write the result.")
@click.option("--verbose", "-v", is_flag=True,
              help="Also list the files of SOURCE that are not images (skipped, by extension).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0),
              help="DataLoader worker processes.")
@click.option("--resume", is_flag=True,
              help="Continue from RESULT.partial after an interruption (Ctrl-C or SIGTERM); "
                   "without one, a warning says so and the scan starts from the first image.")
@click.option("--checkpoint-every", default=256, show_default=True, metavar="N",
              type=click.IntRange(1), help="Images between checkpoints.")
@click.option("--rank", "ranking", type=click.Choice(["activation", "relevance"]), default="activation",
              show_default=True, help="relevance: also keep each unit's top images by its LRP "
                                      "relevance for the predicted class (relevance "
                                      "maximisation).")
@click.option("--relevance-class", default=None, type=click.IntRange(0), metavar="CLASS",
              help="With --rank relevance: the class whose relevance ranks the images "
                   "(default: each image's predicted class).")
@weights_option
@device_option
@click.argument("source", type=click.Path())
@friendly
def scan_command(model: str, layers: str, top: int, out: str, verbose: bool, batch_size: int,
                 workers: int,
                 resume: bool, checkpoint_every: int, ranking: str, relevance_class: Optional[int],
                 weights: str, device: str, source: str) -> None:
    """Find the strongest activations of every feature of LAYERS across SOURCE (a folder of
    images, searched recursively, or a text file listing image paths). With --rank relevance,
    also each feature's most relevant images (its share of the LRP relevance of the image's
    predicted class, or of --relevance-class), one batched relevance pass per batch.

    Under torchrun (--nproc_per_node=N) the ranks scan disjoint shards and merge their results.
    """
    get_spec(model)
    check_output_path(out, formats=None)
    check_relevance_options(ranking, relevance_class)
    from ..analyses import scan
    from ..data.devices import distributed
    from ..data.zoo import load_model

    names = parse_list(layers, "--layers")
    with distributed(device) as (rank, dev):
        net_model = load_model(model, weights=weights).to(dev)
        result = scan(net_model, source, layers=names, hits=top, batch_size=batch_size,
                      workers=workers,
                      out=out, resume=resume, checkpoint_every=checkpoint_every, rank=ranking,
                      relevance_target=relevance_class)
        if rank == 0:
            if result.skipped:
                click.echo(f"warning: skipped {len(result.skipped)} unreadable file(s):",
                           err=True)
                for path, why in result.skipped[:10]:
                    click.echo(f"  {path}: {why}", err=True)
                if len(result.skipped) > 10:
                    click.echo(f"  and {len(result.skipped) - 10} more (result.skipped in "
                               f"Python lists them all)", err=True)
            others = result.data.get("not_images", [])
            if verbose and others:
                click.echo(f"not images (skipped by extension): {len(others)} file(s):",
                           err=True)
                for path in others:
                    click.echo(f"  {path}", err=True)
            click.echo(out)


@cli.command("figure", short_help="Redraw Zeiler & Fergus Fig. 2 from a scan result.")
@click.argument("result_path", metavar="RESULT", type=click.Path())
@click.option("--layer", "-l", default=None, callback=check_layers,
              help="Layer(s) of the scan, comma list [default: all of them].")
@click.option("--features", default="0-15", show_default=True, metavar="LIST",
              help="Feature indices (3,17,40-47) or random:N for a seeded random subset.")
@click.option("--seed", default=0, show_default=True, help="Seed for random:N.")
@click.option("--scaling", type=click.Choice(SCALINGS), default="signed",
              show_default=True, help="Display convention.")
@click.option("--ncols", default=4, show_default=True, type=click.IntRange(1),
              help="Features per row.")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@dpi_option
@method_option
@scan_weights_option
@image_root_option
@device_option
@friendly
def figure_command(result_path: str, layer: Optional[str], features: str, seed: int,
                   scaling: str, ncols: int, out: str, dpi: int, method: str,
                   weights: Optional[str], image_root: Optional[str], device: str) -> None:
    """Redraw Zeiler & Fergus Fig. 2 from a scan RESULT: each feature's top-9 projections
    beside the image patches that caused them. RESULT may be opened from any working folder;
    --image-root finds photos that moved."""
    check_output_path(out, FIGURE_FORMATS)
    if not features.startswith("random:"):
        parse_features(features)
    from ..analyses import load_scan
    from ..data.devices import resolve_device
    from ..data.zoo import load_model
    from ..figures import save_figure

    result = load_scan(result_path, image_root=image_root)
    model = result.load_model() if weights is None else load_model(result.model, weights=weights)
    fig = result.figure(parse_list(layer, "--layer") if layer else None, features, seed=seed,
                        model=model.to(resolve_device(device)), scaling=scaling, ncols=ncols,
                        method=method, progress=True)
    click.echo(save_figure(fig, out, dpi=dpi))


@cli.command("atlas", short_help="A static website of every unit of a scan.")
@click.argument("result_path", metavar="RESULT", type=click.Path())
@click.option("--out", "-o", required=True, metavar="FOLDER",
              help="The site's folder (created; an earlier atlas there is replaced).")
@click.option("--layer", "-l", default=None, callback=check_layers,
              help="Layer(s) of the scan, comma list [default: all of them].")
@click.option("--scaling", type=click.Choice(TILE_SCALINGS), default="signed",
              show_default=True, help="Display convention of the projections.")
@click.option("--image-format", type=click.Choice(["jpg", "webp"]), default="jpg",
              show_default=True, help="The tiles' format.")
@click.option("--feature-vis", is_flag=True,
              help="Also each unit's optimised image (what it wants) on its page, beside its "
                   "hits and their projections: `deconvviz optimize`'s defaults.")
@click.option("--feature-vis-steps", default=None, type=click.IntRange(1), metavar="N",
              help="Adam steps of each optimised image (with --feature-vis) [default: 512].")
@method_option
@scan_weights_option
@image_root_option
@device_option
@friendly
def atlas_command(result_path: str, out: str, layer: Optional[str], scaling: str,
                  image_format: str, feature_vis: bool, feature_vis_steps: Optional[int],
                  method: str,
                  weights: Optional[str], image_root: Optional[str], device: str) -> None:
    """Write a static website of every unit of a scan RESULT: an index, a page per layer
    (every unit's strongest hit, sortable by activation and by how often it fires) and a
    page per unit (its hits beside their projections, its distribution). It opens from the
    file system with no server and no network. RESULT may be opened from any working folder;
    --image-root finds photos that moved.

    Under torchrun (--nproc_per_node=N) the processes share the images.
    """
    if feature_vis_steps is not None and not feature_vis:
        raise ArgumentError("--feature-vis-steps sets the optimised images' steps: add "
                            "--feature-vis")
    names = parse_list(layer, "--layer") if layer else None
    check_output_folder(out, "atlas.json")
    from ..analyses import atlas, load_scan
    from ..data.devices import distributed
    from ..data.zoo import load_model

    result = load_scan(result_path, image_root=image_root)
    for name in names or []:
        result.features(name)  # an unknown layer is named before the model is built
    with distributed(device) as (rank, dev):
        model = None  # a user's model: atlas() says to build it in Python
        if weights is not None:
            model = load_model(result.model, weights=weights).to(dev)
        elif result.weights != "user":
            model = result.load_model().to(dev)
        steps = feature_vis_steps or 512
        estimate = StepEstimate(lambda line: rank == 0 and click.echo(line, err=True),
                                steps=steps, device=dev.type,
                                hint="--feature-vis-steps fewer for a quicker look")
        site = atlas(result, out, model=model, layers=names, method=method, scaling=scaling,
                     image_format=image_format,
                     feature_vis={"steps": steps, "progress": estimate} if feature_vis
                     else None)
        if rank == 0:
            t = site.timings
            click.echo(f"{sum(len(l.units) for l in site.layers):,} units, {t['hits']:,} hits "
                       f"from {t['images']:,} images; {t['files']:,} files, "
                       f"{t['bytes'] / 1e6:.1f} MB; projections {t['projection']:.1f} s, "
                       f"writing {t['writing']:.1f} s"
                       + (f", optimised images {t['feature_vis']:.1f} s"
                          if "feature_vis" in t else ""), err=True)
            click.echo(site.index)
