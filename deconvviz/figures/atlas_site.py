"""The atlas's pages: a static website of every unit of a scan, written from results it is given.

It never runs a model (the figure layer cannot import the engine, the zoo or an analysis):
:func:`deconvviz.atlas` projects the hits and hands this module the tiles and the numbers.

The site is self-contained: relative links only, one stylesheet beside the pages, a few
lines of inline script to sort a layer's units, images as JPEG or WebP files, nothing
fetched from elsewhere; it opens from the file system and can be zipped and served as is.

Layout of the folder::

    index.html            the model, its weights, the images, one row per layer
    style.css
    atlas.json            the same numbers, for programs
    LAYER.html            every unit of a layer, sortable
    LAYER/N.html          unit N: its hits and its distribution
    LAYER/img/uN_rK.jpg   hit K of unit N: its projection beside its image patch
    LAYER/img/uN_fv.png   unit N's optimised image (atlas --feature-vis)
"""
from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .atlas_tiles import relevance_tile_path, tile_path

__all__ = ["SiteHit", "SiteUnit", "SiteLayer", "SiteInfo", "write_site", "layer_slugs"]

@dataclass
class SiteHit:
    """One hit as a unit page shows it: value, image (as displayed), map position and the
    receptive field's window in the input (top, left, height, width)."""

    value: float
    image: str
    y: int
    x: int
    window: Tuple[int, int, int, int]
    # (factor, (height, width)) of a photo enlarged many times to the model's input
    upscaled: Optional[Tuple[float, Tuple[int, int]]] = None


@dataclass
class SiteUnit:
    """A unit: its hits (strongest first, values above 0 only), how many images it fired on
    (``None`` where the scan did not record it) and its histogram (counts per bin of
    :attr:`SiteInfo.edges`; ``None`` likewise)."""

    index: int
    hits: List[SiteHit]
    fired: Optional[int] = None
    histogram: Optional[List[int]] = None
    feature_vis: Optional[str] = None  # its optimised image, relative to the layer's folder
    # relevance maximisation (a scan with rank="relevance"): its most relevant images
    relevance_hits: Optional[List[SiteHit]] = None

    @property
    def strongest(self) -> float:
        return self.hits[0].value if self.hits else 0.0


@dataclass
class SiteLayer:
    """A layer of the atlas: name, output shape, receptive field, units, and the
    distributions the index draws (counts per bin of its units' strongest activations)."""

    name: str
    slug: str
    shape: List[int]
    receptive_field: Optional[int]
    units: List[SiteUnit]
    strongest_counts: List[int] = field(default_factory=list)


@dataclass
class SiteInfo:
    """What the index says about the atlas as a whole."""

    model: str
    weights: str
    weights_digest: Optional[str]
    method: str
    scaling: str
    scan_format: str
    images_listed: int
    images_read: int
    skipped: List[Tuple[str, str]]
    k: int
    created: str
    versions: Dict[str, str]
    input_size: int
    edges: List[float]
    has_distribution: bool
    image_format: str = "jpg"
    feature_vis: Optional[str] = None  # how the optimised images were made (their settings)


def layer_slugs(names: Sequence[str]) -> Dict[str, str]:
    """A file-name-safe, unique slug per layer name (``features.15`` stays, ``a/b`` becomes
    ``a_b``; ``index`` and ``style`` are taken by the site itself)."""
    slugs: Dict[str, str] = {}
    taken = {"index", "style", "atlas"}
    for name in names:
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "layer"
        base, n = slug, 2
        while slug.lower() in taken:
            slug, n = f"{base}_{n}", n + 1
        taken.add(slug.lower())
        slugs[name] = slug
    return slugs


# -- pages ------------------------------------------------------------------------------

def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _num(v: float) -> str:
    return f"{v:.4g}"


def _page(title: str, body: str, css: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<link rel=\"stylesheet\" href=\"{css}\">\n"
            f"</head>\n<body>\n{body}\n</body>\n</html>\n")


def _bars(counts: Sequence[int], labels: Sequence[str], *, width: int = 260,
          height: int = 90, caption: str = "") -> str:
    """An inline SVG bar chart (no script, no external file); each bar's tooltip names its
    range and count."""
    n = max(len(counts), 1)
    peak = max(max(counts, default=0), 1)
    bar = width / n
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height + 16}" width="{width}" '
             f'height="{height + 16}" role="img" aria-label="{_e(caption)}">']
    for i, (count, label) in enumerate(zip(counts, labels)):
        h = 0 if count == 0 else max(1.0, height * count / peak)
        parts.append(f'<rect x="{i * bar:.2f}" y="{height - h:.2f}" width="{max(bar - 1, 1):.2f}"'
                     f' height="{h:.2f}"><title>{_e(label)}: {count}</title></rect>')
    parts.append(f'<line x1="0" y1="{height}" x2="{width}" y2="{height}"/>')
    if labels:
        first, last = labels[0].split(" to ")[0], labels[-1].split(" to ")[-1]
        parts.append(f'<text x="0" y="{height + 13}">{_e(first)}</text>'
                     f'<text x="{width}" y="{height + 13}" text-anchor="end">{_e(last)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _log_chart(counts: Sequence[int], edges: Sequence[float], caption: str,
               max_bars: int = 48) -> str:
    """The positive bins of a fixed-bin histogram, from the first to the last that is used,
    merged in groups so that at most ``max_bars`` bars show."""
    used = [i for i, c in enumerate(counts) if c and i > 0]
    if not used:
        return ""
    lo, hi = used[0], used[-1] + 1
    group = 1
    while (hi - lo) / group > max_bars:
        group *= 2
    merged, labels = [], []
    for start in range(lo, hi, group):
        stop = min(start + group, hi)
        merged.append(sum(counts[start:stop]))
        labels.append(f"{_num(edges[start])} to {_num(edges[stop])}")
    return _bars(merged, labels, caption=caption)


def _rate_chart(units: Sequence[SiteUnit], images: int) -> str:
    counts = [0] * 10
    for unit in units:
        rate = (unit.fired or 0) / max(images, 1)
        counts[min(int(rate * 10), 9)] += 1
    labels = [f"{10 * i}% to {10 * (i + 1)}%" for i in range(10)]
    return _bars(counts, labels, caption="units by the share of images they fire on")


def _rate(unit: SiteUnit, images: int) -> Optional[float]:
    return None if unit.fired is None else unit.fired / max(images, 1)


def _index_page(info: SiteInfo, layers: Sequence[SiteLayer]) -> str:
    rows = []
    for layer in layers:
        n = len(layer.units)
        dead = sum(1 for u in layer.units if not u.hits)
        few = sum(1 for u in layer.units if 0 < len(u.hits) < min(info.k, info.images_read))
        maxima = sorted(u.strongest for u in layer.units if u.hits)
        median = _num(maxima[len(maxima) // 2]) if maxima else "-"
        top = _num(maxima[-1]) if maxima else "-"
        if info.has_distribution:
            rates = sorted(_rate(u, info.images_read) for u in layer.units)
            rate_cell = (f"{100 * rates[len(rates) // 2]:.1f}%<br>"
                         + _rate_chart(layer.units, info.images_read))
        else:
            rate_cell = "not recorded"
        chart = _log_chart(layer.strongest_counts, info.edges,
                           f"{layer.name}: units by their strongest activation")
        shape = "x".join(str(s) for s in layer.shape)
        rf = f"{layer.receptive_field} px" if layer.receptive_field else "whole image"
        rows.append(
            f'<tr><td><a href="{_e(layer.slug)}.html">{_e(layer.name)}</a></td>'
            f"<td>{shape}</td><td>{rf}</td><td>{n}</td>"
            f"<td>{dead} ({100 * dead / max(n, 1):.1f}%)</td><td>{few}</td>"
            f"<td>median {median}, strongest {top}<br>{chart}</td><td>{rate_cell}</td></tr>")
    skipped = ""
    if info.skipped:
        items = "".join(f"<li>{_e(p)}: {_e(r)}</li>" for p, r in info.skipped)
        skipped = (f"<details><summary>{len(info.skipped)} skipped file(s)</summary>"
                   f"<ul>{items}</ul></details>")
    note = "" if info.has_distribution else (
        f'<p class="note">This scan ({_e(info.scan_format)}) did not record the distribution '
        f"of activations or how often units fire; scan again with this version of deconvviz "
        f"to see them.</p>")
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(info.versions.items()))
    body = (
        f"<header><h1>{_e(info.model)}: an atlas of {sum(len(l.units) for l in layers):,} "
        f"units</h1></header>\n<main>\n<dl class=\"facts\">"
        f"<dt>model</dt><dd>{_e(info.model)}</dd>"
        f"<dt>drawn with</dt><dd>{_e(info.weights)}"
        f"{f' (digest {_e(info.weights_digest)})' if info.weights_digest else ''}</dd>"
        f"<dt>projections</dt><dd>{_e(info.method)}, {_e(info.scaling)} scaling, each cropped "
        f"to its receptive field in the {info.input_size}x{info.input_size} input</dd>"
        f"<dt>images</dt><dd>{info.images_read:,} scanned of {info.images_listed:,} listed, "
        f"{len(info.skipped):,} skipped{skipped}</dd>"
        f"<dt>hits kept</dt><dd>the top {info.k} per unit, at most one per image; a hit is "
        f"an activation above 0</dd>"
        f"<dt>scan</dt><dd>{_e(info.scan_format)}, {_e(info.created)}; {versions}</dd></dl>\n"
        f"{note}<table class=\"layers\"><thead><tr><th>layer</th><th>output</th>"
        f"<th>receptive field</th><th>units</th><th>never fired</th>"
        f"<th>fired on fewer than {min(info.k, info.images_read)} images</th>"
        f"<th>strongest activation per unit</th><th>median share of images fired on</th>"
        f"</tr></thead>\n<tbody>{''.join(rows)}</tbody></table>\n</main>")
    return _page(f"{info.model} atlas", body, "style.css")


_SORT_SCRIPT = """<script>
function sortUnits(key, button) {
  var grid = document.getElementById('units');
  var cards = Array.prototype.slice.call(grid.children);
  cards.sort(function (a, b) {
    if (key === 'unit') { return Number(a.dataset.unit) - Number(b.dataset.unit); }
    return Number(b.dataset[key]) - Number(a.dataset[key]) ||
           Number(a.dataset.unit) - Number(b.dataset.unit);
  });
  cards.forEach(function (card) { grid.appendChild(card); });
  Array.prototype.forEach.call(document.querySelectorAll('.sort button'),
    function (b) { b.classList.toggle('on', b === button); });
}
</script>"""


def _layer_page(info: SiteInfo, layer: SiteLayer) -> str:
    cards = []
    for unit in layer.units:
        rate = _rate(unit, info.images_read)
        rate_text = "" if rate is None else f" · fires on {100 * rate:.1f}%"
        data = (f'data-unit="{unit.index}" data-strongest="{unit.strongest:.9g}" '
                f'data-rate="{rate if rate is not None else 0:.9g}"')
        href = f"{_e(layer.slug)}/{unit.index}.html"
        if unit.hits:
            src = tile_path(layer.slug, unit.index, 0, info.image_format)
            cards.append(
                f'<a class="unit" href="{href}" {data}><img loading="lazy" src="{_e(src)}" '
                f'alt="{_e(layer.name)} unit {unit.index}" width="96" height="96">'
                f"<span>#{unit.index}</span><small>{_num(unit.strongest)}{rate_text}</small></a>")
        else:
            cards.append(
                f'<a class="unit dead" href="{href}" {data}><div class="none">never fired'
                f"</div><span>#{unit.index}</span><small>dead{rate_text}</small></a>")
    dead = sum(1 for u in layer.units if not u.hits)
    rate_button = ('<button type="button" onclick="sortUnits(\'rate\', this)">how often it '
                   'fires</button>' if info.has_distribution else
                   '<button type="button" disabled title="not recorded by this scan">how '
                   'often it fires (not recorded)</button>')
    body = (
        f'<nav><a href="index.html">{_e(info.model)}</a> › {_e(layer.name)}</nav>\n'
        f"<header><h1>{_e(layer.name)}: {len(layer.units)} units</h1>"
        f"<p>Each unit's strongest hit over {info.images_read:,} images, projected "
        f"({_e(info.method)}) and cropped to its receptive field; {dead} unit(s) never fired "
        f"(marked, not hidden). Drawn with {_e(info.weights)}.</p></header>\n"
        f'<p class="sort">Sort by: <button type="button" class="on" '
        f"onclick=\"sortUnits('unit', this)\">unit</button>"
        f"<button type=\"button\" onclick=\"sortUnits('strongest', this)\">strongest "
        f"activation</button>{rate_button}</p>\n"
        f'<main id="units" class="grid">{"".join(cards)}</main>\n{_SORT_SCRIPT}')
    return _page(f"{info.model} {layer.name}", body, "style.css")


def _unit_page(info: SiteInfo, layer: SiteLayer, position: int) -> str:
    unit = layer.units[position]
    prev_unit = layer.units[position - 1] if position > 0 else None
    next_unit = layer.units[position + 1] if position + 1 < len(layer.units) else None
    nav = (f'<nav><a href="../index.html">{_e(info.model)}</a> › '
           f'<a href="../{_e(layer.slug)}.html">{_e(layer.name)}</a> › unit {unit.index} '
           + (f'<a class="step" rel="prev" href="{prev_unit.index}.html">← #{prev_unit.index}</a>'
              if prev_unit else '<span class="step">← first</span>')
           + (f'<a class="step" rel="next" href="{next_unit.index}.html">#{next_unit.index} →</a>'
              if next_unit else '<span class="step">last →</span>') + "</nav>")
    slots = min(info.k, info.images_read)
    if not unit.hits:
        summary = (f"Never fired: its strongest activation was not above 0 on any of the "
                   f"{info.images_read:,} images, so it has no hits to show.")
    elif len(unit.hits) < slots:
        summary = (f"Fired on only {len(unit.hits)} image(s): {len(unit.hits)} of {slots} "
                   f"hits.")
    else:
        summary = f"Its top {len(unit.hits)} hits, strongest first."
    hits = []
    for rank, hit in enumerate(unit.hits):
        name = os.path.basename(tile_path(layer.slug, unit.index, rank, info.image_format))
        pair = (f'<img src="img/{_e(name)}" alt="hit {rank + 1}: projection and image patch" '
                f'height="128">')
        top, left, h, w = hit.window
        small = ""
        if hit.upscaled is not None:
            factor, (ph, pw) = hit.upscaled
            small = (f'<br><span class="upscaled">a small photo ({ph}x{pw} px) enlarged '
                     f"{factor:.0f}x to the model's input: its patch is a few of its pixels"
                     f"</span>")
        hits.append(
            f'<figure class="hit{" small" if small else ""}">{pair}<figcaption><b>'
            f"{rank + 1}.</b> {_num(hit.value)}<br>"
            f'<span class="file" title="{_e(hit.image)}">{_e(hit.image)}</span><br>'
            f"map position (y {hit.y}, x {hit.x}); receptive field {h}x{w} px (height x "
            f"width) from (y {top}, x {left}) of the input{small}</figcaption></figure>")
    if unit.histogram is None:
        distribution = (f'<p class="note">The distribution was not recorded: this scan '
                        f"({_e(info.scan_format)}) is older than format deconvviz-scan/3.</p>")
    else:
        fired = unit.fired or 0
        chart = _log_chart(unit.histogram, info.edges,
                           f"{layer.name} unit {unit.index}: images by strongest activation")
        distribution = (f"<p>Fires (strongest activation above 0) on {fired:,} of "
                        f"{info.images_read:,} images ({100 * fired / max(info.images_read, 1):.1f}"
                        f"%). Each image's strongest activation, on a log scale:</p>"
                        + (chart or "<p>(no positive activation)</p>"))
    explained = (f" Each hit: its {_e(info.method)} projection beside the image patch under "
                 f"the same receptive field." if unit.hits else "")
    body = (f"{nav}\n<header><h1>{_e(layer.name)} · unit {unit.index}</h1>"
            f"<p>{summary}{explained} Drawn with {_e(info.weights)}.</p></header>\n"
            f'<main>{_feature_vis_section(info, layer, unit)}'
            f'<div class="side"><section class="hits">{"".join(hits)}</section>'
            f'{_relevance_section(info, layer, unit)}</div>\n'
            f"<section><h2>Distribution over {info.images_read:,} images</h2>{distribution}"
            f"</section></main>")
    return _page(f"{info.model} {layer.name} unit {unit.index}", body, "../style.css")


def _feature_vis_section(info: SiteInfo, layer: SiteLayer, unit: SiteUnit) -> str:
    """The unit's optimised image (what it wants), beside which its hits show what it
    found in the images and their projections why; empty without one."""
    if unit.feature_vis is None:
        return ""
    return (f'<section class="wanted"><h2>What it wants: its optimised image</h2>'
            f'<figure class="hit"><img src="{_e(unit.feature_vis)}" alt="the image optimised '
            f'to activate {_e(layer.name)} unit {unit.index}" height="128">'
            f"<figcaption>{_e(info.feature_vis or '')}</figcaption></figure>"
            f"<h2>What it found: its hits in the images, with their projections</h2>"
            f"</section>\n")
def _relevance_section(info: SiteInfo, layer: SiteLayer, unit: SiteUnit) -> str:
    """The unit's relevance-maximising images beside its activation-maximising hits (empty
    for a scan that did not rank by relevance)."""
    if unit.relevance_hits is None:
        return ""
    if not unit.relevance_hits:
        return ('<section class="relmax"><h2>Most relevant images</h2><p>No image gave this '
                "unit a positive share of its class's relevance.</p></section>")
    tiles = []
    for rank, hit in enumerate(unit.relevance_hits):
        name = os.path.basename(relevance_tile_path(layer.slug, unit.index, rank,
                                                    info.image_format))
        tiles.append(f'<figure class="hit"><img src="img/{_e(name)}" alt="relevance hit '
                     f'{rank + 1}: image patch" height="128"><figcaption><b>{rank + 1}.</b> '
                     f'{100 * hit.value:.2f}% of the relevance<br><span class="file" '
                     f'title="{_e(hit.image)}">{_e(hit.image)}</span><br>relevance peaks at '
                     f"(y {hit.y}, x {hit.x})</figcaption></figure>")
    return ('<section class="relmax"><h2>Most relevant images (relevance maximisation)</h2>'
            "<p>The images in which this unit holds the largest share of the LRP relevance of "
            "the predicted class (Achtibat et al. 2023): the patch under its receptive field "
            "where its relevance peaks.</p>"
            f'<div class="hits">{"".join(tiles)}</div></section>')


_CSS = """body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#222;background:#fafafa}
header,main,nav,.sort{margin:0 16px}nav{padding:10px 0;color:#666}a{color:#0645ad}
h1{font-size:20px;margin:8px 0}h2{font-size:16px}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px}.facts dt{color:#666}
.note{background:#fff4d6;padding:6px 10px;border-left:3px solid #e0a800}
table.layers{border-collapse:collapse;margin:12px 0}
.layers td,.layers th{border-bottom:1px solid #ddd;padding:6px 10px;text-align:left;
vertical-align:top}
.grid{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:24px}
.unit{display:flex;flex-direction:column;width:96px;text-decoration:none;color:#222;
font-size:11px}
.unit img,.unit .none{width:96px;height:96px;image-rendering:pixelated;background:#ddd}
.unit img{object-fit:cover;object-position:0 0}
.unit .none{display:flex;align-items:center;justify-content:center;color:#555;
background:repeating-linear-gradient(45deg,#ddd,#ddd 6px,#e8e8e8 6px,#e8e8e8 12px)}
.unit.dead span{color:#a00}
.sort button{margin:0 4px}.sort button.on{font-weight:bold}
.step{margin-left:12px}
.hits{display:flex;flex-wrap:wrap;gap:12px}
.side{display:flex;flex-wrap:wrap;gap:24px}.side>section{flex:1 1 420px}
.hit{margin:0;width:260px;font-size:12px}
.hit img{height:128px;width:auto;image-rendering:pixelated;background:#000}
.file{word-break:break-all;color:#444}
.upscaled{color:#a15c00}.hit.small img{outline:3px solid #e0a800}
.chart rect{fill:#4a7bb7}.chart line{stroke:#999}.chart text{font-size:10px;fill:#555}
"""


def write_site(root: str, info: SiteInfo, layers: Sequence[SiteLayer]) -> List[str]:
    """Write the pages (index, one per layer, one per unit), the stylesheet and
    ``atlas.json`` into ``root`` (its tiles already written); returns the files written."""
    written = []

    def put(relative: str, text: str) -> None:
        with open(os.path.join(root, relative), "w", encoding="utf-8") as handle:
            handle.write(text)
        written.append(relative)

    put("style.css", _CSS)
    put("index.html", _index_page(info, layers))
    for layer in layers:
        put(f"{layer.slug}.html", _layer_page(info, layer))
        os.makedirs(os.path.join(root, layer.slug), exist_ok=True)
        for position, unit in enumerate(layer.units):
            put(f"{layer.slug}/{unit.index}.html", _unit_page(info, layer, position))
    manifest = {
        "format": "deconvviz-atlas/1", "model": info.model, "weights": info.weights,
        "weights_digest": info.weights_digest, "method": info.method,
        "scan_format": info.scan_format, "images_read": info.images_read,
        "layers": [{"name": l.name, "page": f"{l.slug}.html", "units": [
            {"unit": u.index, "page": f"{l.slug}/{u.index}.html", "strongest": u.strongest,
             "hits": len(u.hits), "fired": u.fired} for u in l.units]} for l in layers]}
    put("atlas.json", json.dumps(manifest, indent=1))
    return written
