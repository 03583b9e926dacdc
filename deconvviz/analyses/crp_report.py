"""CRP's figure for one image and class: the layer's most relevant concepts, each with its
conditional heatmap, its share of the layer's relevance and its reference patches from a
scan (the relevance-maximising hits where the scan ranked by relevance, else the
activation-maximising ones; the figure says which)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Union

import numpy as np
from torch import Tensor, nn

from .. import figures
from .._io import write_atomically
from ..choices import weights_label
from ..data.images import load_image
from ..data.zoo import model_info, model_name
from ..engine import Projector
from ..errors import ArgumentError
from ..figures.display import crop_window
from ..results import Result
from .attribution import attribute_map, class_names
from .crp import ConceptRelevance, crp
from .scan_result import ScanResult
from .top_hits import check_scanned_weights

__all__ = ["ConceptReport", "concept_report", "reference_patches"]


@dataclass
class ConceptReport(Result):
    """:func:`concept_report`'s result: the CRP result, the photo, the class's heatmap and
    each concept's reference patches; ``figure()`` draws it, ``save(path)`` writes it (or
    its data: ``.csv`` each concept's relevance and share, ``.npz`` the arrays), and
    ``to_dict()``/``to_csv()`` give the concepts' table."""

    relevance: ConceptRelevance
    photo: np.ndarray
    class_map: np.ndarray
    references: List[List[np.ndarray]]
    reference_kind: str
    title: str
    kind: ClassVar[str] = "concept_report"

    def figure(self, **options):
        r = self.relevance
        maps = [r.heatmaps[0, k].sum(0).cpu().numpy() for k in range(len(r.concepts))]
        return figures.concept_figure(self.photo, self.class_map, maps, r.concepts,
                                      r.share[0].tolist(), self.references, title=self.title,
                                      reference_title=self.reference_kind, **options)

    def _table(self) -> Dict[str, list]:
        """The image's concepts (its class's relevance, most relevant first): their
        channel, relevance and share, and how many reference patches each has."""
        r = self.relevance
        table = r.to_dict()
        table["references"] = [len(self.references[k]) for k in range(len(r.concepts))]
        return table

    def _save_data(self, path: str, ext: str) -> str:
        if ext == ".csv":
            return super()._save_data(path, ext)
        r = self.relevance
        arrays = {"photo": self.photo, "class_map": self.class_map,
                  "heatmaps": r.heatmaps[0].sum(1).cpu().numpy(),
                  "concepts": np.asarray(r.concepts), "share": r.share[0].cpu().numpy(),
                  "relevance": r.relevance[0].cpu().numpy(), "title": np.asarray(self.title)}
        for k, patches in enumerate(self.references):
            for j, patch in enumerate(patches):
                arrays[f"reference_{k}_{j}"] = patch
        return write_atomically(path, lambda f: np.savez_compressed(f, **arrays))


def reference_patches(scan: ScanResult, net: Projector, layer: str, feature: int,
                      count: int = 4, by: str = "relevance") -> List[np.ndarray]:
    """The photo patches under the receptive field of a unit's top hits in ``scan`` (by
    relevance, or by activation), as uint8 arrays, most relevant first."""
    hits = (scan.relevance_top(layer, feature) if by == "relevance"
            else scan.top(layer, feature))[:count]
    patches = []
    for hit in hits:
        x, rgb = load_image(hit.image, preprocessing=scan.preprocessing)
        geom = net.layer(layer, tuple(x.shape[-2:])).geometry
        top, left, h, w = (geom.window(hit.y, hit.x) if geom is not None
                           else (0, 0) + tuple(rgb.shape[:2]))
        patches.append(crop_window(rgb, top, left, h, w))
    return patches


def concept_report(model: nn.Module, image: Union[str, Tensor], layer: str, *, top: int = 6,
                   target: Union[None, int, str] = None, scan: Optional[ScanResult] = None,
                   references: int = 4, method: str = "lrp",
                   photo: Optional[np.ndarray] = None) -> ConceptReport:
    """CRP's figure for one image: the ``top`` most relevant concepts of ``layer`` for the
    class ``target`` (default: the top-1), with reference patches from ``scan`` (a scan of
    the same model and weights holding ``layer``).

    Examples:
        >>> concept_report(model, "cat.jpg", "conv5_3", scan=load_scan("scan.pt")).save("c.png")
    """
    if isinstance(image, str):
        x, photo = load_image(image, model=model)
    else:
        x = image
        if photo is None:
            raise ValueError("give photo= (uint8 H x W x 3) with a tensor image")
    if scan is not None:  # before any work: a scan of another model or other weights
        check_scanned_weights(scan, model)
    if references < 1:
        raise ArgumentError(f"references must be at least 1 (reference patches per concept), "
                            f"got {references}; leave out the scan for none")
    net = Projector(model, method=method)
    x = x.to(net.device) if net.device is not None else x
    result = crp(net, x[:1], layer=layer, top=top, target=target, method=method)
    class_map = attribute_map(model, x[:1], method, target=result.classes[0],
                              nets={method: net})[0].sum(0)
    refs: List[List[np.ndarray]] = [[] for _ in result.concepts]
    kind = "no scan given"
    if scan is not None:
        by = "relevance" if scan.has_relevance else "activation"
        kind = f"{by}-maximising patches"
        refs = [reference_patches(scan, net, layer, c, references, by) for c in result.concepts]
    names = class_names(model)
    cls = result.classes[0]
    label = names[cls] if names and cls < len(names) else f"class {cls}"
    info = model_info(model)
    weights = weights_label(info.weights if info is not None else "user")
    title = (f"CRP: {model_name(model)} ({weights}), {label}, the {len(result.concepts)} most "
             f"relevant concepts of {layer} ({net.method.title})")
    return ConceptReport(result, photo, class_map.cpu().numpy(), refs, kind, title)
