"""The atlas as a result: :class:`AtlasResult`, what :func:`~deconvviz.analyses.atlas.atlas`
wrote (its folder, its layers and units, its timings), drawn as a layer's grid of units."""
from __future__ import annotations

import base64
import os
from typing import ClassVar, Dict, List, Optional

from .. import figures
from .._signatures import api
from ..errors import ArgumentError
from ..figures.atlas_site import SiteInfo, SiteLayer
from ..figures.atlas_tiles import thumbnail_grid
from ..results import Result

__all__ = ["AtlasResult"]


class AtlasResult(Result):
    """The atlas :func:`atlas` wrote: where it is, what it holds, and what it cost.

    Attributes:
        path: the atlas's folder; ``index`` its ``index.html``.
        layers: per layer, its units as the pages show them.
        timings: seconds spent projecting (images read, forward and reverse passes) and
            writing (cropping, scaling, encoding the tiles, summed over the threads that
            encode them while the next images are projected; ``pages``: writing the pages),
            summed over processes under ``torchrun``; and ``files``, ``bytes``, ``hits``,
            ``images``.

    ``figure()`` is a layer's grid of units (:meth:`grid`, one pixel a pixel at 100 dpi),
    ``save("grid.png")`` writes it; in Jupyter it shows the first layer's units (each one's
    strongest projection) and a link.
    """

    kind: ClassVar[str] = "atlas"

    def __init__(self, path: str, info: SiteInfo, layers: List[SiteLayer], timings: dict):
        self.path = path
        self.index = os.path.join(path, "index.html")
        self.info = info
        self.layers = layers
        self.timings = timings

    @api(renamed={"unit": "feature"})
    def unit_page(self, layer: str, feature: int) -> str:
        """The path of feature ``feature``'s page (what a paper links to)."""
        unit = feature
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

    def figure(self, *, layer: Optional[str] = None, count: int = 64):
        """A layer's first ``count`` units (default: the first layer's), each its strongest
        projection (grey: never fired), at the grid's own size."""
        return figures.picture(self.grid(layer, count))

    def _table(self) -> Dict[str, list]:
        """Every unit, as its layer's page lists them: layer, unit, strongest activation,
        hits shown, images it fired on (empty where the scan did not record it), its page."""
        columns: Dict[str, list] = {k: [] for k in ("layer", "unit", "strongest", "hits",
                                                    "fired", "page")}
        for layer in self.layers:
            for unit in layer.units:
                row = (layer.name, unit.index, unit.strongest, len(unit.hits), unit.fired,
                       os.path.join(self.path, layer.slug, f"{unit.index}.html"))
                for key, value in zip(columns, row):
                    columns[key].append(value)
        return columns

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


