"""The atlas: every unit of a scan as a static website (see docs/atlas.md).

:func:`atlas` re-runs each image that holds a hit once (one recorded forward pass for all
the layers), projects all of its hits of a layer in one batched pass through their
receptive-field cones, crops each projection and the photo to the field, and writes the pair
as one small image; :mod:`deconvviz.figures.atlas_site` then writes the pages. Under
``torchrun`` each process projects a disjoint share of the images into the same folder.
"""
from __future__ import annotations

import base64
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn

from .. import method_table
from .._io import check_output_folder
from ..choices import TILE_SCALINGS, weights_label
from ..data.images import image_size
from ..data.zoo import model_info
from ..engine import Projector
from ..engine.precision import precise
from ..errors import ArgumentError
from ..figures.atlas_site import SiteHit, SiteInfo, SiteLayer, SiteUnit, layer_slugs, write_site
from ..figures.atlas_tiles import (
    IMAGE_FORMATS,
    relevance_tile_path,
    thumbnail_grid,
    tile_path,
    write_pair,
    write_tile,
)
from ..figures.display import crop_window, to_uint8
from . import activation_histogram
from .scan_result import ScanResult, load_scan
from .top_hits import check_hit_values, check_scanned_weights, strongest_hit, value_check

__all__ = ["atlas", "AtlasResult"]

# A photo enlarged more than this many times to the model's input is marked on unit pages.
UPSCALE_MARK = 4.0


class AtlasResult:
    """The atlas :func:`atlas` wrote: where it is, what it holds, and what it cost.

    Attributes:
        path: the atlas's folder; ``index`` its ``index.html``.
        layers: per layer, its units as the pages show them.
        timings: seconds spent projecting (images read, forward and reverse passes) and
            writing (cropping, scaling, encoding the tiles, summed over the threads that
            encode them while the next images are projected; ``pages``: writing the pages),
            summed over processes under ``torchrun``; and ``files``, ``bytes``, ``hits``,
            ``images``.

    In Jupyter it shows the first layer's units (each one's strongest projection) and a link.
    """

    def __init__(self, path: str, info: SiteInfo, layers: List[SiteLayer], timings: dict):
        self.path = path
        self.index = os.path.join(path, "index.html")
        self.info = info
        self.layers = layers
        self.timings = timings

    def unit_page(self, layer: str, unit: int) -> str:
        """The path of a unit's page (what a paper links to)."""
        for site_layer in self.layers:
            if site_layer.name == layer:
                if not 0 <= unit < len(site_layer.units):
                    raise ArgumentError(f"unit {unit} is out of range for layer {layer!r}: "
                                        f"valid units are 0 to {len(site_layer.units) - 1}")
                return os.path.join(self.path, site_layer.slug, f"{unit}.html")
        raise ArgumentError(f"layer {layer!r} is not in this atlas; it has "
                            f"{', '.join(l.name for l in self.layers)}")

    def grid(self, layer: Optional[str] = None, count: int = 64):
        """A uint8 image of a layer's first ``count`` units (grey: never fired)."""
        chosen = self.layers[0] if layer is None else next(
            (l for l in self.layers if l.name == layer), None)
        if chosen is None:
            raise ArgumentError(f"layer {layer!r} is not in this atlas")
        return thumbnail_grid(self.path, chosen, self.info.image_format, count=count)

    def _repr_png_(self) -> bytes:
        import cv2

        return cv2.imencode(".png", self.grid()[:, :, ::-1])[1].tobytes()

    def _repr_html_(self) -> str:
        import html

        png = base64.b64encode(self._repr_png_()).decode()
        first = self.layers[0]
        link = os.path.relpath(self.index) if not os.path.relpath(self.index).startswith("..") \
            else "file://" + os.path.abspath(self.index)
        return (f'<div><p><a href="{html.escape(link)}" target="_blank">{html.escape(link)}</a>'
                f": {self.info.model}, {sum(len(l.units) for l in self.layers):,} units. "
                f"{html.escape(first.name)}'s first {min(64, len(first.units))} units "
                f"(grey: never fired):</p><img src=\"data:image/png;base64,{png}\"></div>")

    def __repr__(self) -> str:
        return (f"AtlasResult({self.index}, {self.info.model}, "
                f"{sum(len(l.units) for l in self.layers)} units in "
                f"{', '.join(l.name for l in self.layers)})")


def _rank_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@precise
def atlas(scan: Union[ScanResult, str, os.PathLike], out: Union[str, os.PathLike], *,
          model: Optional[nn.Module] = None, layers: Optional[Sequence[str]] = None,
          method: str = "deconvnet", scaling: str = "signed", image_format: str = "jpg",
          image_root: Union[None, str, os.PathLike] = None,
          progress: bool = True,
          feature_vis: Union[None, bool, Dict[str, object]] = None,
          precision: Optional[str] = None) -> AtlasResult:
    """Write a static website of every unit of a scan: an index, a page per layer (every
    unit's strongest hit, sortable) and a page per unit (its hits beside their projections,
    its distribution over the images).

    Args:
        scan: a :class:`ScanResult` or the path of one.
        out: the atlas's folder (created; an earlier atlas there is replaced).
        model: the scanned model; by default rebuilt from the scan (zoo name and weights).
            Other weights than the scan's are refused.
        layers: some of the scan's layers (default: all).
        method: the reverse pass, one of ``deconvnet``, ``guided``, ``gradient``.
        scaling: display convention of each projection: ``signed``, ``paper`` or
            ``heatmap`` (``shared`` needs every tile at once).
        image_format: ``jpg`` or ``webp``.
        image_root: where the scan's photos are now, if they moved (see
            :func:`load_scan`); every photo must still give the values the scan recorded.
        progress: a progress bar on stderr, counting images.
        feature_vis: also each unit's optimised image on its page (:func:`feature_vis`;
            ``True`` for its defaults, or a dict of its options such as ``{"steps": 128}``),
            beside its hits and their projections.
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.

    Returns:
        An :class:`AtlasResult` (on every ``torchrun`` process).

    Examples:
        >>> site = atlas("scan.pt", "atlas/")
        >>> site.unit_page("conv5", 42)
        'atlas/conv5/42.html'
    """
    result = (scan.relocated(image_root) if isinstance(scan, ScanResult)
              else load_scan(scan, image_root=image_root))
    method_table.check(method, method_table.REVERSE)
    if scaling not in TILE_SCALINGS:
        raise ArgumentError(f"scaling {scaling!r} is not one the atlas draws tile by tile; "
                            f"choose from {', '.join(TILE_SCALINGS)}")
    if image_format not in IMAGE_FORMATS:
        raise ArgumentError(f"unknown image format {image_format!r}; choose from "
                            f"{', '.join(IMAGE_FORMATS)}")
    names = list(layers) if layers is not None else list(result.layer_names)
    if not names:
        raise ArgumentError("no layers for the atlas")
    for name in names:
        result.features(name)  # names the scan's layers if it is not one of them
    final = check_output_folder(os.fspath(out), "atlas.json")
    if model is None:
        if result.weights == "user":
            raise ArgumentError(f"the scan is of a model outside the zoo ({result.model}); "
                                f"build its atlas in Python: dv.atlas(scan, out, model=...)")
        model = result.load_model()
    check_scanned_weights(result, model)
    net = Projector(model, method=method)
    slugs = layer_slugs(names)
    units = {l: [[h for h in result.top(l, f) if h.value > 0]  # a zero is not a hit
                 for f in range(result.features(l))] for l in names}
    by_image: Dict[str, list] = {}
    for layer in names:
        for f, hits in enumerate(units[layer]):
            for rank, hit in enumerate(hits):
                by_image.setdefault(hit.image, []).append((layer, f, rank, hit))
    rank_id, world = _rank_world()
    staging = final + ".partial"
    if rank_id == 0:
        if os.path.exists(staging):
            shutil.rmtree(staging)
        for slug in slugs.values():
            os.makedirs(os.path.join(staging, slug, "img"))
    if world > 1:
        dist.barrier()
    try:
        position = {}
        for i, path in enumerate(result.images):
            position.setdefault(path, i)
        order = sorted(by_image, key=position.__getitem__)
        mine = {p: by_image[p] for p in order[rank_id::world]}
        spent = _project_all(result, net, names, slugs, mine, staging, scaling, image_format,
                             progress and rank_id == 0)
        settings = None
        if feature_vis:
            settings, spent["feature_vis"] = _feature_vis_tiles(
                model, net, result, names, slugs, staging, feature_vis, rank_id, world)
        if rank_id == 0 and result.has_relevance:
            _relevance_tiles(result, net, names, slugs, staging, image_format, spent)
        if world > 1:
            parts: List = [None] * world
            dist.all_gather_object(parts, spent)
            spent = {k: sum(p[k] for p in parts) for k in spent}
        site_layers = _site_layers(result, net, names, slugs, units)
        info = _site_info(result, model, method, scaling, image_format)
        if settings is not None:
            info.feature_vis = settings
            for site_layer in site_layers:
                for unit in site_layer.units:
                    unit.feature_vis = f"img/u{unit.index}_fv.png"
        started = time.perf_counter()
        if rank_id == 0:
            written = write_site(staging, info, site_layers)
            spent["files"] += len(written)
            spent["bytes"] += sum(os.path.getsize(os.path.join(staging, w)) for w in written)
            _replace(staging, final)
        spent["pages"] = time.perf_counter() - started
        spent["writing"] += spent["pages"]
        if world > 1:
            dist.barrier()
    except BaseException:
        if rank_id == 0 and os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return AtlasResult(os.fspath(out), info, site_layers, spent)


def _project_all(result, net, names, slugs, by_image, root, scaling, image_format, progress):
    """Project every hit of ``by_image`` (image path -> its hits in any layer) and write its
    pair (projection beside patch); returns the seconds spent and what was written.

    Images go in groups (:func:`_group_size`): one recorded forward pass per group, and one
    batched reverse pass per layer for all the group's hits, whatever image they are in."""
    from tqdm import tqdm

    spent = {"projection": 0.0, "writing": 0.0, "images": len(by_image), "hits": 0,
             "files": 0, "bytes": 0}
    strongest = {l: strongest_hit(result, l) for l in names}
    geometry: dict = {}
    images = list(by_image)
    group = _group_size(net.device)
    bar = tqdm(total=len(images), unit="img", desc=f"atlas {result.model}",
               disable=not progress, dynamic_ncols=True)
    writers = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    pending: list = []
    try:
        for g0 in range(0, len(images), group):
            paths = images[g0:g0 + group]
            started = time.perf_counter()
            loaded = [result.load_image(image) for image in paths]
            x = torch.cat([x for x, _ in loaded])
            if net.device is not None:
                x = x.to(net.device)
            wanted = [l for l in names if any(item[0] == l for p in paths for item in by_image[p])]
            rec = net.record(x, wanted)
            projected = []
            for layer in wanted:
                mine = [(i, item) for i, p in enumerate(paths) for item in by_image[p]
                        if item[0] == layer]
                for i, path in enumerate(paths):
                    check_hit_values(path, layer, rec.activations[layer][i:i + 1],
                                     [(f, hit) for j, (_, f, _, hit) in mine if j == i],
                                     strongest[layer], value_check(result))
                units = [(i, f, hit.y, hit.x) for i, (_, f, _, hit) in mine]
                pixels = net.project_units(x, layer, units=units, recording=rec)
                projected.append((layer, mine, pixels.permute(0, 2, 3, 1).cpu().numpy()))
            spent["projection"] += time.perf_counter() - started
            # The tiles are encoded by threads (OpenCV's encoder releases the GIL) while the
            # next group is projected; at most two groups' tiles are in flight.
            for future in pending:
                _count(spent, future.result())
            pending = []
            for layer, mine, pixels in projected:
                key = (layer, tuple(x.shape[-2:]))
                if key not in geometry:
                    geometry[key] = net.layer(layer, key[1]).geometry
                for k, (i, (_, f, rank, hit)) in enumerate(mine):
                    pending.append(writers.submit(
                        _write_tile, root, tile_path(slugs[layer], f, rank, image_format),
                        pixels[k], loaded[i][1], geometry[key], hit, scaling, image_format))
            bar.update(len(paths))
        for future in pending:
            _count(spent, future.result())
    finally:
        writers.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return spent


def _write_tile(root, relative, pixels, rgb, geom, hit, scaling, image_format):
    """Crop a hit's projection and photo to its field, scale, encode and write the pair;
    returns (bytes written, seconds spent)."""
    started = time.perf_counter()
    top, left, h, w = (geom.window(hit.y, hit.x) if geom is not None
                       else (0, 0) + tuple(rgb.shape[:2]))
    patch = crop_window(rgb, top, left, h, w)
    projection = to_uint8(crop_window(pixels, top, left, h, w), scaling, photo=patch)
    size = write_pair(root, relative, projection, patch, image_format)
    return size, time.perf_counter() - started


def _count(spent: dict, written) -> None:
    size, seconds = written
    spent["bytes"] += size
    spent["writing"] += seconds
    spent["files"] += 1
    spent["hits"] += 1


def _group_size(device) -> int:
    """Images recorded and projected together: 8 on a CPU (the recording of a deep layer's
    guided backprop holds every ReLU's input), 32 on a GPU."""
    return 32 if device is not None and device.type == "cuda" else 8


def _feature_vis_tiles(model, net, result, names, slugs, root, options, rank_id, world):
    """Each unit's optimised image (this process's share of each layer's units), written as
    ``LAYER/img/uN_fv.png``; returns the settings line the pages show and the seconds."""
    import cv2

    from .feature_vis import feature_vis

    started = time.perf_counter()
    options = dict(options) if isinstance(options, dict) else {}
    options.setdefault("preprocessing", result.preprocessing)
    settings = None
    for layer in names:
        mine = list(range(result.features(layer)))[rank_id::world]
        if not mine:
            continue
        made = feature_vis(model, layer, mine, net=net, **options)
        settings = made.settings()
        for row, unit in enumerate(made.units):
            path = os.path.join(root, slugs[layer], "img", f"u{unit}_fv.png")
            if not cv2.imwrite(path, made.image(row)[:, :, ::-1]):
                raise OSError(f"cannot write {path}")
    return settings, time.perf_counter() - started


def _site_layers(result, net, names, slugs, units) -> List[SiteLayer]:
    size = result.preprocessing.crop_size
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in result.images])
    shown, upscaled = {}, {}
    out = []
    for layer in names:
        geom = net.layer(layer, (size, size))
        hist = result.histogram(layer)
        site_units = []
        for f, hits in enumerate(units[layer]):
            site_hits = []
            for hit in hits:
                if hit.image not in upscaled:
                    shown[hit.image] = os.path.relpath(os.path.abspath(hit.image), root)
                    upscaled[hit.image] = _upscaled(hit.image, result.preprocessing)
                window = (geom.geometry.window(hit.y, hit.x) if geom.geometry is not None
                          else (0, 0, size, size))
                site_hits.append(SiteHit(hit.value, shown[hit.image], hit.y, hit.x,
                                         tuple(int(v) for v in window),
                                         upscaled=upscaled[hit.image]))
            site_units.append(SiteUnit(
                f, site_hits, fired=None if hist is None else int(hist[f, 1:].sum()),
                histogram=None if hist is None else hist[f].tolist(),
                relevance_hits=_relevance_hits(result, layer, f, geom, size, shown, root)))
        maxima = torch.tensor([u.hits[0].value for u in site_units if u.hits])
        counts = activation_histogram.empty(1)
        if maxima.numel():
            counts = activation_histogram.accumulate(counts, maxima[:, None])
        rf = getattr(geom, "rf_size", None)
        out.append(SiteLayer(layer, slugs[layer], list(result.layers[
            result.layer_names.index(layer)]["shape"]), rf if geom.geometry is not None else None,
            site_units, counts[0].tolist()))
    return out


def _relevance_hits(result, layer, f, geom, size, shown, root) -> Optional[List[SiteHit]]:
    """A unit's relevance-maximising hits as its page shows them (``None``: not scanned)."""
    if not result.has_relevance:
        return None
    out = []
    for hit in result.relevance_top(layer, f):
        if hit.image not in shown:
            shown[hit.image] = os.path.relpath(os.path.abspath(hit.image), root)
        window = (geom.geometry.window(hit.y, hit.x) if geom.geometry is not None
                  else (0, 0, size, size))
        out.append(SiteHit(hit.value, shown[hit.image], hit.y, hit.x,
                           tuple(int(v) for v in window)))
    return out


def _relevance_tiles(result, net, names, slugs, root, image_format, spent) -> None:
    """Write the patch of every relevance-maximising hit (relevance maximisation's
    reference images), reading each image once."""
    by_image: Dict[str, list] = {}
    for layer in names:
        for f in range(result.features(layer)):
            for rank, hit in enumerate(result.relevance_top(layer, f)):
                by_image.setdefault(hit.image, []).append((layer, f, rank, hit))
    for image, items in by_image.items():
        x, rgb = result.load_image(image)
        for layer, f, rank, hit in items:
            geom = net.layer(layer, tuple(x.shape[-2:])).geometry
            top, left, h, w = (geom.window(hit.y, hit.x) if geom is not None
                               else (0, 0) + tuple(rgb.shape[:2]))
            spent["bytes"] += write_tile(root, relevance_tile_path(slugs[layer], f, rank,
                                                                   image_format),
                                         crop_window(rgb, top, left, h, w), image_format)
            spent["files"] += 1


def _upscaled(path: str, prep) -> Optional[Tuple[float, Tuple[int, int]]]:
    """``(factor, (height, width))`` of a photo the preprocessing enlarged more than
    :data:`UPSCALE_MARK` times (its short side to ``resize_size``); ``None`` otherwise."""
    height, width = image_size(path)
    factor = prep.resize_size / max(min(height, width), 1)
    return (factor, (height, width)) if factor > UPSCALE_MARK else None


def _site_info(result, model, method, scaling, image_format) -> SiteInfo:
    # The weights that drew it (their digest is the scan's): a checkpoint that moved is
    # named where it is now.
    info = model_info(model)
    drawn = info.weights if info is not None else result.weights
    weights = weights_label(drawn)
    if drawn == "random":
        weights = "untrained weights: random initialisation (deconvviz's fixed seed 0)"
    return SiteInfo(
        model=result.model, weights=weights, weights_digest=result.weights_digest,
        method=method, scaling=scaling, scan_format=result.format,
        images_listed=len(result.images), images_read=result.images_read,
        skipped=list(result.skipped), k=result.k, created=str(result.data.get("created", "")),
        versions=dict(result.versions), input_size=result.preprocessing.crop_size,
        edges=activation_histogram.edges(), has_distribution=result.has_distribution,
        image_format=image_format)


def _replace(staging: str, final: str) -> None:
    """Put the finished site in place of ``final`` (an earlier atlas or an empty folder)."""
    old = None
    if os.path.exists(final):
        old = f"{final}.old-{os.getpid()}"
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
