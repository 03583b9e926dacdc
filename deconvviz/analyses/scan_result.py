"""A scan's result and its file: the hits (:class:`Hit`), :class:`ScanResult` (top-k hits,
histograms, metadata, ``figure()``), :func:`load_scan` (formats 1 to 3) and :func:`same_hits`,
the check that two scans agree (see :mod:`.dataset_scan`, which makes them)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._io import write_atomically
from .._signatures import api
from ..data.images import load_image
from ..data.zoo import Preprocessing, load_model
from ..errors import ArgumentError, ImageError, WeightsError, first_line
from ..results import Result
from . import activation_histogram, top_hits

__all__ = ["ScanResult", "Hit", "load_scan", "same_hits", "write_scan", "VALUE_RTOL",
           "FORMAT", "READABLE"]

# 2: positive hits only, runner-ups, the weights' digest; 3: each feature's distribution
FORMAT = "deconvviz-scan/3"
READABLE = ("deconvviz-scan/1", "deconvviz-scan/2", FORMAT)
VALUE_RTOL = 1e-4  # hit values agree to this fraction of the layer's strongest hit


@dataclass(frozen=True)
class Hit:
    """One of a feature's strongest activations: its value, image and map position."""

    value: float
    image: str
    y: int
    x: int


class ScanResult(Result):
    """The outcome of :func:`scan`, as saved on disk and returned by :func:`load_scan`.

    ``save("scan.pt")`` writes the scan (what :func:`load_scan` reads), ``save("fig.png")``
    (``.jpg .pdf .svg``) its figure, :meth:`figure`; ``to_dict()``/``to_csv()`` give every
    hit as a table. Jupyter shows its summary, not the figure: drawing projects the hits
    through the model again.

    Attributes:
        model, weights: what was scanned with.
        weights_digest: the fingerprint of those weights (:func:`weights_digest`); figures
            refuse a model whose weights differ. ``None`` in scans of format 1.
        layers: the layers scanned, with ``path`` and ``shape`` each.
        images: every image path, absolute: a scan stores them so (older scans stored them
            as given; a relative one is read against the scan file's folder, or against
            the working folder where it is found there), and ``image_root`` moves them (see
            :func:`load_scan`).
        skipped: ``(path, reason)`` of each image that could not be read.
        k: hits kept per feature.
        preprocessing: how images were turned into inputs.
        versions: deconvviz, torch and torchvision versions used.
        precision, device: how and where the activations were computed (``"exact"`` or
            ``"tf32"``; ``"cpu"``, ``"cuda"``...); ``None`` in scans written before they
            were recorded.
        format: the file format it was written in (``deconvviz-scan/1`` to ``/3``); the
            distribution of activations (:meth:`histogram`) is recorded from format 3 on.
    """

    kind: ClassVar[str] = "scan"
    shown_in_jupyter: ClassVar[bool] = False  # the figure runs the model

    def __init__(self, data: dict, *, origin: Optional[str] = None,
                 image_root: Union[None, str, os.PathLike] = None) -> None:
        self.data = data
        self.origin = origin  # the folder of the file it was read from
        self.image_root = (None if image_root is None
                           else os.path.expanduser(os.fspath(image_root)))
        meta = data["meta"]
        self.model: str = meta["model"]
        self.weights: str = meta["weights"]
        self.weights_digest: Optional[str] = meta.get("weights_digest")  # format 2 on
        self.layers: List[dict] = meta["layers"]
        self.images: List[str] = _placed(meta["images"], origin, self.image_root)
        self.k: int = meta["top"]
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.versions: Dict[str, str] = meta["versions"]
        self.skipped: List[Tuple[str, str]] = [(self.images[i], r) for i, r in data["skipped"]]
        self.format: str = data.get("format", "deconvviz-scan/1")
        self.precision: Optional[str] = meta.get("precision")
        self.device: Optional[str] = meta.get("device")
        # "pillow" (also every scan made before this was recorded), "nvjpeg" or "mixed"
        self.decoder: str = meta.get("decoder", "pillow")

    @property
    def has_distribution(self) -> bool:
        """Whether the scan recorded each feature's distribution (format 3 on)."""
        return "histograms" in self.data

    def histogram(self, layer: str) -> Optional[Tensor]:
        """Per feature, how many read images had their strongest activation in each bin of
        :func:`~deconvviz.analyses.activation_histogram.edges`: an int64 ``[C, BINS]``
        tensor whose rows sum to :attr:`images_read`; column 0 counts the images on which
        the feature did not fire (strongest activation not positive). ``None`` for scans
        older than format 3, which did not record it."""
        self._tops(layer)
        if not self.has_distribution:
            return None
        return activation_histogram.unpack(self.data["histograms"][layer])

    def fired(self, layer: str) -> Optional[Tensor]:
        """Per feature, the number of read images on which it fired (strongest activation
        above 0), as an int64 ``[C]`` tensor; ``None`` for scans older than format 3."""
        hist = self.histogram(layer)
        return None if hist is None else hist[:, 1:].sum(dim=1)

    @property
    def weights_argument(self) -> Optional[str]:
        """What to pass to :func:`load_model` to get the scanned weights back (random weights
        are reproducible: :func:`load_model` draws them with a fixed seed); a checkpoint's
        path is absolute (an older scan's relative one is read as its images are)."""
        named = {"imagenet": "default", "random": None, "pretrained": "default"}
        if self.weights in named:
            return named[self.weights]
        return _resolved(self.weights, self.origin)

    def relocated(self, image_root: Union[None, str, os.PathLike]) -> "ScanResult":
        """The same scan with its photos read from ``image_root``, which takes the place of
        the folder that held them all (their deepest common folder). The hits stay those
        of the scan: the atlas checks that each photo still gives its scanned values."""
        if image_root is None:
            return self
        return ScanResult(self.data, origin=self.origin, image_root=image_root)

    def load_model(self):
        """The scanned zoo model with the scan's own weights (a user's model cannot be
        rebuilt: pass it yourself).

        Raises:
            ArgumentError: the scan is of a model outside the zoo.
            WeightsError: the scan's checkpoint file is no longer where the scan found it.
        """
        if self.weights == "user":
            raise ArgumentError(f"the scan is of a model outside the zoo ({self.model}); "
                                f"pass the model itself (Python: model=...)")
        weights = self.weights_argument
        if weights not in (None, "default") and not os.path.isfile(weights):
            digest = f" (digest {self.weights_digest})" if self.weights_digest else ""
            raise WeightsError(
                f"the scan's own weights are not where it found them: {weights}; give the "
                f"same weights{digest} from where they are now with --weights FILE "
                f"(Python: model=load_model(..., weights=FILE))")
        return load_model(self.model, weights=weights)

    def load_image(self, path: str):
        """``(x, rgb)`` of one of the scan's photos, preprocessed as the scan did; a missing
        photo's message says how to open a scan whose photos moved. An image the scan was
        given in memory (``image K``) is read from the result itself."""
        inline = self.data.get("inline_images") or {}
        if path in inline:
            x = inline[path][None]
            prep = self.preprocessing
            mean = torch.tensor(prep.mean)[:, None, None]
            std = torch.tensor(prep.std)[:, None, None]
            rgb = ((x[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
            return x, rgb.astype("uint8")
        if not os.path.exists(path):
            moved = ("" if self.image_root is not None else
                     "; if the scan's photos moved, give their new folder with --image-root "
                     "FOLDER (Python: image_root=...)")
            raise ImageError(f"image not found: {path}{moved}")
        return load_image(path, preprocessing=self.preprocessing)

    @property
    def layer_names(self) -> List[str]:
        return [l["name"] for l in self.layers]

    def features(self, layer: str) -> int:
        """Number of features (channels) of ``layer``."""
        return int(self._tops(layer)["values"].shape[0])

    def _tops(self, layer: str) -> Dict[str, Tensor]:
        if layer not in self.data["tops"]:
            raise ArgumentError(f"layer {layer!r} is not in this scan; it has "
                                f"{', '.join(self.layer_names)}")
        return self.data["tops"][layer]

    def _runner_ups(self, layer: str) -> List[List[float]]:
        """Per feature and rank, the strongest other value in the hit's own map (``-inf``
        where unknown: scans of format 1 did not record it)."""
        tops = self._tops(layer)
        runner_ups = tops.get("runner_ups")
        if runner_ups is None:
            runner_ups = torch.full_like(tops["values"], float("-inf"))
        return runner_ups.tolist()

    def top(self, layer: str, feature: int) -> List[Hit]:
        """The feature's hits, strongest first: fewer than ``k`` where fewer images were read
        or fewer images made the feature fire (a hit is a positive activation)."""
        tops = self._tops(layer)
        channels = tops["values"].shape[0]
        if not isinstance(feature, int) or not 0 <= feature < channels:
            raise ArgumentError(f"feature {feature!r} is out of range for layer {layer!r}: "
                                f"valid features are 0 to {channels - 1}")
        return [Hit(float(v), self.images[int(i)], int(y), int(x))
                for v, i, y, x in zip(tops["values"][feature], tops["images"][feature],
                                      tops["ys"][feature], tops["xs"][feature]) if int(i) >= 0]

    @property
    def has_relevance(self) -> bool:
        """Whether the scan also ranked each unit's images by relevance (``rank="relevance"``)."""
        return "relevance_tops" in self.data

    @property
    def relevance_meta(self) -> Optional[dict]:
        """How the relevance was computed (``{"method", "target"}``), if it was."""
        return self.data["meta"].get("relevance")

    def relevance_top(self, layer: str, feature: int) -> List[Hit]:
        """The unit's images by relevance (relevance maximisation): each hit's value is the
        unit's share of the image's relevance at the layer, at the position where the
        unit's relevance peaks; most relevant first."""
        if not self.has_relevance:
            raise ArgumentError("this scan did not rank by relevance: scan with "
                                "rank='relevance' (--rank relevance)")
        self._tops(layer)  # an unknown layer is refused, naming the scanned ones
        tops = self.data["relevance_tops"][layer]
        channels = tops["values"].shape[0]
        if not 0 <= feature < channels:
            raise ArgumentError(f"feature {feature} out of range for {layer!r} "
                                f"({channels} features)")
        return [Hit(float(v), self.images[int(i)], int(y), int(x))
                for v, i, y, x in zip(tops["values"][feature], tops["images"][feature],
                                      tops["ys"][feature], tops["xs"][feature]) if int(i) >= 0]

    def _save_data(self, path: str, ext: str) -> str:
        return write_scan(self, path)

    def _table(self) -> Dict[str, list]:
        """Every hit: layer, feature, rank (0 strongest), value, image and map position."""
        columns: Dict[str, list] = {k: [] for k in ("layer", "feature", "rank", "value",
                                                    "image", "y", "x")}
        for layer in self.layer_names:
            for feature in range(self.features(layer)):
                for rank, hit in enumerate(self.top(layer, feature)):
                    for key, value in zip(columns, (layer, feature, rank, hit.value,
                                                    hit.image, hit.y, hit.x)):
                        columns[key].append(value)
        return columns

    @property
    def images_read(self) -> int:
        """Images whose activations were scanned (listed minus skipped)."""
        return len(self.images) - len(self.skipped)

    def figure(self, layers: Union[None, str, Sequence[str]] = None, features: str = "0-15",
               **options):
        """Zeiler & Fergus Fig. 2 of this scan: the hits are projected again through the
        model. Options as in :func:`deconvviz.analyses.top_hits.top_hits_figure`."""
        return top_hits.top_hits_figure(self, layers, features, **options)

    def __repr__(self) -> str:
        return (f"ScanResult({self.model}, layers {', '.join(self.layer_names)}, "
                f"{self.images_read} images read, {len(self.skipped)} skipped, top {self.k})")


def write_scan(result: ScanResult, path: Union[str, os.PathLike]) -> str:
    """Write a scan (atomically) where :func:`load_scan` can read it, under any file name
    (``deconvviz scan --out`` takes any; ``ScanResult.save`` takes ``.pt``)."""
    return write_atomically(os.fspath(path), lambda f: torch.save(result.data, f))


def load_scan(path: Union[str, os.PathLike],
              image_root: Union[None, str, os.PathLike] = None) -> ScanResult:
    """Read a result written by :func:`scan` (or ``deconvviz scan``), from any working
    folder.

    Args:
        path: the scan's file.
        image_root: where the scan's photos are now, if they moved: it takes the place of
            the folder that held them all (their deepest common folder), e.g. the scan of
            ``/data/photos/a/1.jpg`` and ``/data/photos/b/2.jpg`` opened with
            ``image_root="/mnt/photos"`` reads ``/mnt/photos/a/1.jpg``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ArgumentError(f"{path} is a folder; give a scan result file (what deconvviz "
                            f"scan --out RESULT wrote), and scan a folder of photos with "
                            f"deconvviz scan first")
    if not os.path.isfile(path):
        raise ArgumentError(f"scan result not found: {path}")
    if image_root is not None and not os.path.isdir(os.path.expanduser(os.fspath(image_root))):
        raise ArgumentError(f"image root is not a folder: {os.fspath(image_root)}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if _is_archive(path):  # a torch file cut short or corrupted (a copy that stopped)
            raise ArgumentError(f"{path} is damaged or incomplete: a scan file that cannot "
                                f"be read ({first_line(exc)}); copy it again or scan "
                                f"again") from None
        data = None
    if not isinstance(data, dict) or data.get("format") not in READABLE:
        raise ArgumentError(f"{path} is not a deconvviz scan result")
    try:
        return ScanResult(data, origin=os.path.dirname(os.path.abspath(path)),
                          image_root=image_root)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ArgumentError(f"{path} is damaged or incomplete (a deconvviz scan result "
                            f"missing {exc}); scan again") from None


def _is_archive(path: str) -> bool:
    """Whether ``path`` starts as the zip archive that ``torch.save`` writes."""
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _resolved(path: str, origin: Optional[str]) -> str:
    """A stored path made absolute: an older scan's relative path is read against the scan
    file's folder, or against the working folder where only that holds it (where such a
    scan was opened before)."""
    if os.path.isabs(path):
        return path
    beside = os.path.join(origin, path) if origin is not None else os.path.abspath(path)
    if not os.path.exists(beside) and os.path.exists(path):
        return os.path.abspath(path)
    return os.path.normpath(beside)


def _placed(images: Sequence[str], origin: Optional[str],
            image_root: Optional[str]) -> List[str]:
    """The scan's image paths, absolute, and moved to ``image_root`` when it is given."""
    if image_root is None:
        return [_resolved(p, origin) if origin is not None else p for p in images]
    base = origin if origin is not None else os.getcwd()
    absolute = [os.path.normpath(os.path.join(base, p)) for p in images]
    if not absolute:
        return []
    common = os.path.commonpath([os.path.dirname(p) for p in absolute])
    root = os.path.abspath(image_root)
    return [os.path.join(root, os.path.relpath(p, common)) for p in absolute]


@api(legacy=("rtol",))
def same_hits(a: "ScanResult", b: "ScanResult", *, rtol: float = VALUE_RTOL) -> List[str]:
    """The ways two scans of the same images differ beyond what is guaranteed across batch
    sizes, workers, threads and processes (see the module docstring); ``[]`` when they agree.

    Per layer and feature, with ``tol = rtol`` times the layer's strongest hit in either scan:

    - the hits at each rank have values within ``tol``;
    - they are the same hit (image and position), unless the difference is a near-tie that
      another kernel may break the other way: two images whose values are within ``tol``
      (neighbours in either list, or the last kept hit, whose twin beyond the list is
      unseen), or two positions of one image's map within ``tol`` of each other (the scan
      records each hit's runner-up in its own map);
    - one list may be longer only by hits within ``tol`` of zero (a value that is positive
      under one kernel and not under another is a hit in one scan only).
    """
    problems = []
    if a.layer_names != b.layer_names or a.images != b.images or a.skipped != b.skipped:
        return ["different layers, images or skipped files"]
    for layer in a.layer_names:
        values = torch.cat([a._tops(layer)["values"].reshape(-1),
                            b._tops(layer)["values"].reshape(-1)])
        finite = values[values.isfinite()]
        tol = rtol * float(finite.abs().max()) if finite.numel() else 0.0
        ra, rb = a._runner_ups(layer), b._runner_ups(layer)
        for f in range(a.features(layer)):
            ha, hb = a.top(layer, f), b.top(layer, f)
            longer = ha if len(ha) > len(hb) else hb
            extra = [h for h in longer[min(len(ha), len(hb)):] if h.value > tol]
            if extra:
                problems.append(f"{layer} #{f}: {len(ha)} != {len(hb)} hits "
                                f"(first extra {extra[0]})")
            for i, (x, y) in enumerate(zip(ha, hb)):
                if abs(x.value - y.value) > tol:
                    problems.append(f"{layer} #{f} rank {i}: values {x.value} != {y.value}")
                elif (x.image, x.y, x.x) == (y.image, y.y, y.x):
                    continue
                elif x.image == y.image:
                    if not (x.value - ra[f][i] <= tol or y.value - rb[f][i] <= tol):
                        problems.append(f"{layer} #{f} rank {i}: {x} != {y}, another "
                                        f"position of the same map that is not a near-tie")
                elif not _tied(ha, i, tol) and not _tied(hb, i, tol):
                    problems.append(f"{layer} #{f} rank {i}: {x} != {y}, not a near-tie")
    return problems


def _tied(hits: List[Hit], i: int, tol: float) -> bool:
    """Whether hit ``i`` is within ``tol`` of a neighbour, or is the last kept (its twin
    beyond the list is unseen)."""
    near = [j for j in (i - 1, i + 1) if 0 <= j < len(hits)]
    return i == len(hits) - 1 or any(abs(hits[i].value - hits[j].value) <= tol for j in near)
