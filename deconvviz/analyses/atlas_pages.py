"""The atlas's tiles and pages: every hit of a scan projected and written as an image tile
(grouped by photo, a photo recorded once for all its hits), the optimised images and the
relevance tiles beside them, and what each layer's and unit's page lists."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

import torch

from .._progress import progress_bar
from ..choices import weights_label
from ..data.images import image_size
from ..data.zoo import model_info
from ..figures.atlas_site import SiteHit, SiteInfo, SiteLayer, SiteUnit
from ..figures.atlas_tiles import (
    relevance_tile_path,
    tile_path,
    write_pair,
    write_tile,
)
from ..figures.display import crop_window, to_uint8
from . import activation_histogram
from .top_hits import check_hit_values, strongest_hit, value_check

__all__ = ["project_all", "feature_vis_tiles", "relevance_tiles", "site_layers", "site_info",
           "UPSCALE_MARK"]

# A photo enlarged more than this many times to the model's input is marked on unit pages.
UPSCALE_MARK = 4.0

def project_all(result, net, names, slugs, by_image, root, scaling, image_format, progress):
    """Project every hit of ``by_image`` (image path -> its hits in any layer) and write its
    pair (projection beside patch); returns the seconds spent and what was written.

    Images go in groups (:func:`_group_size`): one recorded forward pass per group, and one
    batched reverse pass per layer for all the group's hits, whatever image they are in."""
    spent = {"projection": 0.0, "writing": 0.0, "images": len(by_image), "hits": 0,
             "files": 0, "bytes": 0}
    strongest = {l: strongest_hit(result, l) for l in names}
    geometry: dict = {}
    images = list(by_image)
    group = _group_size(net.device)
    bar = progress_bar(progress, total=len(images), unit="img", desc=f"atlas {result.model}")
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
                pixels = net.project_units(x, layer, positions=units, recording=rec)
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
                    geometry[key] = net.layer(layer, key[1]).hit_geometry
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



def feature_vis_tiles(model, net, result, names, slugs, root, options, rank_id, world):
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
        made = feature_vis(model, layer, features=mine, net=net, **options)
        settings = made.settings()
        for unit in made.units:
            path = os.path.join(root, slugs[layer], "img", f"u{unit}_fv.png")
            if not cv2.imwrite(path, made.image(unit)[:, :, ::-1]):
                raise OSError(f"cannot write {path}")
    return settings, time.perf_counter() - started



def site_layers(result, net, names, slugs, units) -> List[SiteLayer]:
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
                window = (geom.hit_geometry.window(hit.y, hit.x) if geom.hit_geometry is not None
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
        window = (geom.hit_geometry.window(hit.y, hit.x) if geom.hit_geometry is not None
                  else (0, 0, size, size))
        out.append(SiteHit(hit.value, shown[hit.image], hit.y, hit.x,
                           tuple(int(v) for v in window)))
    return out



def relevance_tiles(result, net, names, slugs, root, image_format, spent) -> None:
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
            geom = net.layer(layer, tuple(x.shape[-2:])).hit_geometry
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



def site_info(result, model, method, scaling, image_format) -> SiteInfo:
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
