"""Commands that set methods side by side: ``compare``, ``sanity`` and ``evaluate`` (every
method scored by every metric); ``crp`` (concept relevance propagation)."""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Tuple

import click

from .. import method_table, metric_table
from .._io import (
    DATA_FORMATS,
    FIGURE_FORMATS,
    check_output_folder,
    check_output_path,
    result_formats,
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
    method_list,
    model_option,
    target_options,
    weights_option,
)

__all__: list = []  # commands, registered on deconvviz.cli.cli


@cli.command("compare", short_help="Every method's attribution side by side.")
@model_option
@target_options
@click.option("--methods", default=None, metavar="LIST",
              help=f"Comma list of {', '.join(method_table.names())} [default: "
                   f"{', '.join(method_table.COMPARE_DEFAULT)}].")
@click.option("--cam-layer", default=None, callback=check_layers,
              help="The CAMs' layer, or a comma list of layers whose maps are fused "
                   "(Grad-CAM: one) [default: the last convolutional block].")
@click.option("--aug-smooth", is_flag=True,
              help="CAMs: average six augmented inputs (flipped, x0.9, x1, x1.1).")
@click.option("--eigen-smooth", is_flag=True,
              help="CAMs: the weighted activations' first principal component.")
@click.option("--out", "-o", required=True, metavar="PATH",
              help="Output .png/.jpg/.pdf/.svg, or .npz for the maps.")
@dpi_option
@weights_option
@device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@friendly
def compare_command(model: str, target: Optional[str], layer: Optional[str],
                    feature: Optional[int], mode: str, methods: Optional[str],
                    cam_layer: Optional[str], aug_smooth: bool, eigen_smooth: bool, out: str,
                    dpi: int, weights: str, device: str, images: List[str]) -> None:
    """One row per IMAGE, one column per method, explaining the same class (or unit): the
    layout of Grad-CAM's Fig. 1 and Springenberg's Fig. 2."""
    get_spec(model)
    names = method_list(methods, method_table.COMPARE_DEFAULT)
    check_output_path(out, result_formats("comparison"))
    if (layer is None) != (feature is None):
        raise ArgumentError("a unit target needs both --layer and --feature")
    from ..analyses import compare
    from ..data.devices import resolve_device
    from ..data.zoo import load_model

    net_model = load_model(model, weights=weights).to(resolve_device(device))
    from tqdm import tqdm

    with tqdm(total=len(names), desc=f"compare ({len(images)} images)", unit="method",
              file=sys.stderr) as bar:
        result = compare(net_model, images, methods=names, target=target, layer=layer,
                         features=feature, mode=mode, cam_layer=cam_layer,
                         progress=lambda *_: bar.update(),
                         **({"aug_smooth": True} if aug_smooth else {}),
                         **({"eigen_smooth": True} if eigen_smooth else {}))
    click.echo(result.save(out, dpi=dpi))


@cli.command("sanity", short_help="Adebayo's sanity check: randomise the layers, top down.")
@model_option
@click.option("--methods", default=None, metavar="LIST",
              help=f"Comma list of {', '.join(method_table.names())} [default: "
                   f"{', '.join(method_table.SANITY_DEFAULT)}].")
@click.option("--target", default=None, metavar="CLASS",
              help="A class index or name [default: the image's top-1 class].")
@click.option("--seed", default=0, show_default=True, help="Seed of the re-initialisations.")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@click.option("--csv", "csv_path", default=None, metavar="PATH", help="Also write the scores.")
@dpi_option
@weights_option
@device_option
@click.argument("image", type=click.Path())
@friendly
def sanity_command(model: str, methods: Optional[str], target: Optional[str], seed: int,
                   out: str, csv_path: Optional[str], dpi: int, weights: str, device: str,
                   image: str) -> None:
    """Cascading model-parameter randomisation (Adebayo et al., 2018) on IMAGE: re-initialise
    the layers one by one from the logits down, and measure how much each method's map
    changes (Spearman rank correlation and SSIM against the original map)."""
    get_spec(model)
    names = method_list(methods, method_table.SANITY_DEFAULT)
    check_output_path(out, FIGURE_FORMATS)
    if csv_path is not None:
        check_output_path(csv_path, DATA_FORMATS["sanity"])
    from tqdm import tqdm

    from ..analyses import sanity_check
    from ..data.devices import resolve_device
    from ..data.images import load_image
    from ..data.zoo import load_model

    dev = resolve_device(device)
    net_model = load_model(model, weights=weights).to(dev)
    x, _ = load_image(image, net_model)
    from ..analyses.sanity import parametrised_layers

    steps = 1 + len(parametrised_layers(net_model))
    with tqdm(total=steps * len(names), desc="sanity (layers x methods)", unit="map",
              file=sys.stderr) as bar:
        result = sanity_check(net_model, x.to(dev), methods=names, target=target, seed=seed,
                              progress=lambda *_: bar.update())
    click.echo(result.save(out, dpi=dpi))
    if csv_path is not None:
        click.echo(result.save(csv_path))


@cli.command("crp", short_help="CRP: a layer's most relevant concepts for one image's class.")
@model_option
@click.option("--layer", "-l", required=True, callback=check_layer,
              help="The concepts' layer (alias or module path).")
@click.option("--target", default=None, metavar="CLASS",
              help="A class index or name [default: the image's top-1 class].")
@click.option("--top", default=6, show_default=True, type=click.IntRange(1),
              help="Concepts shown, most relevant first.")
@click.option("--scan", "scan_path", default=None, metavar="RESULT",
              help="A scan of the same model and weights holding --layer: each concept's "
                   "reference patches (its relevance-maximising hits if the scan ranked by "
                   "relevance, else its activation-maximising ones).")
@click.option("--references", default=4, show_default=True, type=click.IntRange(1),
              help="Reference patches per concept.")
@click.option("--method", default="lrp", show_default=True,
              help="An LRP method (lrp, lrp_epsilon_gamma_box, lrp_epsilon_alpha2beta1_flat, "
                   "lrp_<rule>).")
@click.option("--out", "-o", required=True, metavar="PATH", help="Output .png/.jpg/.pdf/.svg.")
@dpi_option
@weights_option
@device_option
@click.argument("image", type=click.Path())
@friendly
def crp_command(model: str, layer: str, target: Optional[str], top: int,
                scan_path: Optional[str], references: int, method: str, out: str, dpi: int,
                weights: str, device: str, image: str) -> None:
    """Concept relevance propagation (Achtibat et al. 2023) on IMAGE: the TOP channels of
    LAYER with the most LRP relevance for the class, each with its concept-conditional
    heatmap, its share of the layer's relevance and reference patches from a scan."""
    get_spec(model)
    method_table.check(method, method_table.REVERSE)
    if not method_table.get(method).relevance:
        raise ArgumentError(f"CRP needs an LRP method (lrp, lrp_<rule>, ...), not {method!r}")
    check_output_path(out, FIGURE_FORMATS)
    from ..analyses import load_scan
    from ..analyses.crp_report import concept_report
    from ..data.devices import resolve_device
    from ..data.zoo import load_model

    scan = load_scan(scan_path) if scan_path is not None else None
    net_model = load_model(model, weights=weights).to(resolve_device(device))
    report = concept_report(net_model, image, layer, top=top, target=target, scan=scan,
                            references=references, method=method)
    click.echo(report.save(out, dpi=dpi))


_TABLES = {"csv_path": ".csv", "md_path": ".md", "tex_path": ".tex"}


@cli.command("evaluate", short_help="Score every method by every metric (faithfulness, "
                                    "localisation, ...).")
@model_option
@click.option("--methods", default=None, metavar="LIST|all",
              help=f"Comma list of methods, or all [default: "
                   f"{', '.join(method_table.COMPARE_DEFAULT)}].")
@click.option("--metrics", default="faithfulness", show_default=True,
              metavar="LIST|FAMILY|all",
              help=f"Comma list of metrics or families ({', '.join(metric_table.FAMILIES)}), "
                   f"or all. Metrics: {', '.join(metric_table.names())}.")
@click.option("--target", default=None, metavar="CLASS",
              help="A class index or name [default: each image's top-1 class].")
@click.option("--boxes", default=None, metavar="FILE|DIR",
              help="The objects, for the localisation metrics: a folder of Pascal VOC .xml "
                   "files (one per image, by name), one .xml, or a COCO instances .json. With "
                   "--target NAME, only the boxes of class NAME.")
@click.option("--cam-layer", default=None, callback=check_layer,
              help="The CAMs' layer [default: the last convolutional block].")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1),
              help="Images per forward pass.")
@click.option("--seed", default=0, show_default=True, help="Seed of the metrics' draws.")
@click.option("--param", "param_items", multiple=True, metavar="METRIC.NAME=VALUE",
              help="A metric's parameter instead of its paper's default (repeatable), e.g. "
                   "--param deletion.steps=16 --param region_perturbation_morf.patch_size=16 "
                   "(docs/evaluation.md lists each metric's).")
@click.option("--out", "-o", default=None, metavar="DIR",
              help="A new (or earlier evaluate's) folder: the table as evaluation.csv, .md "
                   "and .tex, every image's score (per_image.csv) and the figure "
                   "(evaluation.png).")
@click.option("--csv", "csv_path", default=None, metavar="FILE", help="Write the table as CSV.")
@click.option("--md", "md_path", default=None, metavar="FILE",
              help="Write the table as Markdown.")
@click.option("--tex", "tex_path", default=None, metavar="FILE",
              help="Write the table as LaTeX.")
@dpi_option
@weights_option
@device_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@friendly
def evaluate_command(model: str, methods: Optional[str], metrics: str, target: Optional[str],
                     boxes: Optional[str], cam_layer: Optional[str], batch_size: int,
                     seed: int, param_items: Tuple[str, ...], out: Optional[str], dpi: int,
                     weights: str, device: str, images: List[str],
                     **tables: Optional[str]) -> None:
    """Score each method's maps of IMAGES by each metric (docs/evaluation.md): a table of
    means and standard errors over the images, printed as Markdown, or written with --out,
    --csv, --md, --tex. Nothing is written unless everything ran."""
    get_spec(model)
    names = method_list(methods, method_table.COMPARE_DEFAULT)
    wanted = metric_table.resolve(metrics)
    params = metric_params(param_items, wanted)
    needing = [m for m in wanted if "boxes" in metric_table.get(m).needs]
    if needing and boxes is None:
        raise ArgumentError(f"{', '.join(needing)} need(s) the objects' boxes: give --boxes "
                            f"FILE|DIR (Pascal VOC XML or COCO JSON)")
    if out is not None:
        out = check_output_folder(out, "evaluation.csv")
    for key, ext in _TABLES.items():
        if tables[key] is not None:
            check_output_path(tables[key], (ext,))
    from ..data.boxes import read_boxes
    from ..data.images import image_list

    paths = image_list(list(images))
    if boxes is not None:  # a missing file, a box outside its image: before any model
        read_boxes(boxes, paths, only=target if target and not target.strip().lstrip(
            "-").isdigit() else None)
    from ..analyses import evaluate
    from ..data.devices import resolve_device
    from ..data.zoo import load_model

    net_model = load_model(model, weights=weights).to(resolve_device(device))
    # the API's bar on stderr: methods x (maps + metrics), each metric's steps beside it
    result = evaluate(net_model, paths, methods=names, metrics=wanted, target=target,
                      boxes=boxes, cam_layer=cam_layer, params=params,
                      batch_size=batch_size, seed=seed, progress=True)
    for method, why in result.not_applicable.items():
        click.echo(f"warning: {method} is n/a on {model}: {why}", err=True)
    _write_evaluation(result, out, tables, dpi)


def metric_params(items: Tuple[str, ...], wanted: List[str]) -> Dict[str, dict]:
    """``("deletion.steps=16", ...)`` -> ``{"deletion": {"steps": 16}}``: each value read as
    a Python literal (a number, a tuple, ``None``), else kept as text; the metric must be
    evaluated and take the parameter."""
    import ast

    params: Dict[str, dict] = {}
    for item in items:
        key, eq, text = item.partition("=")
        metric, dot, name = key.strip().partition(".")
        if not (eq and dot and metric and name):
            raise ArgumentError(f"--param is METRIC.NAME=VALUE (e.g. deletion.steps=16), got "
                                f"{item!r}")
        metric_table.get(metric)  # an unknown metric: refused as such, with the closest
        if metric not in wanted:
            raise ArgumentError(f"--param {item!r}: {metric!r} is not evaluated; metrics: "
                                f"{', '.join(wanted)}")
        known = metric_table.get(metric).params
        if name not in known:
            raise ArgumentError(f"--param {item!r}: {metric} takes no parameter {name!r}; "
                                f"its parameters: {', '.join(known) or 'none'}")
        if name in params.get(metric, {}):
            raise ArgumentError(f"--param {item!r}: {metric}.{name} is given twice")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        try:
            metric_table.check_params(metric, {name: value})
        except ArgumentError as exc:
            raise ArgumentError(f"--param {item!r}: {exc}") from None
        params.setdefault(metric, {})[name] = value
    return params


def _write_evaluation(result, out: Optional[str], tables: dict, dpi: int) -> None:
    """Every output, after everything ran: the figure is drawn before any file is written."""
    import os

    from .._io import write_atomically
    from ..results import csv_text

    if out is None and not any(tables.values()):
        click.echo(result.to_markdown(), nl=False)
        return
    written = {path: result for path in tables.values() if path is not None}
    if out is not None:
        figure = result.figure()
        os.makedirs(out, exist_ok=True)
        for ext in (".csv", ".md", ".tex"):
            written[os.path.join(out, f"evaluation{ext}")] = result
        per_image = csv_text(result.per_image()).encode()
        click.echo(write_atomically(os.path.join(out, "per_image.csv"),
                                    lambda f: f.write(per_image)))
        from ..figures import save_figure

        click.echo(save_figure(figure, os.path.join(out, "evaluation.png"), dpi=dpi))
    for path in written:
        click.echo(result.save(path))
