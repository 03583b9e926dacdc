"""Every evaluation metric deconvviz offers, in one table, without importing torch.

:func:`deconvviz.evaluate`, ``deconvviz evaluate --metrics`` and the metrics' registry
(:mod:`deconvviz.analyses.evaluation`) read this table: a metric's name, family, direction,
what it needs, its paper's defaults, and how it treats a map's sign and colour channels are
written here once. The conventions are the same for every method: a ``[C, H, W]`` map is
reduced to ``[H, W]`` by summing its channels (:data:`CHANNELS`), and each metric says which
sign it reads. A map that is zero everywhere gets the score written in its ``summary``
(never a division by zero).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import ArgumentError, closest

__all__ = ["Metric", "FAMILIES", "NEEDS", "CHANNELS", "BASELINES", "get", "names", "entries",
           "resolve", "register", "unregister", "forward_passes", "check_params",
           "higher_is_better", "title"]

FAMILIES = ("faithfulness", "confidence", "localisation", "randomisation", "complexity",
            "robustness")
NEEDS = ("boxes", "explain", "model")
CHANNELS = "summed over colour channels to one value per pixel"
BASELINES = ("black", "white", "mean", "uniform", "zero")
"""The named "removed" values (besides a number, or in Python a tensor)."""
"""How every metric reduces a 3-channel map (a 1-channel map is taken as it is)."""
_SIGNED = "signed: the most relevant pixel is the largest value"
_ABS = "absolute value"
_POSITIVE = "positive part (negative values count as 0)"


@dataclass(frozen=True)
class Metric:
    """One metric: what every caller needs to know of it, and nothing of how it runs.

    Attributes:
        name: what users type (``--metrics road_morf``).
        title: how tables and figures name it.
        family: one of :data:`FAMILIES`.
        higher_is_better: the direction of a better explanation.
        needs: what it needs beyond images and maps: ``"boxes"`` (object masks),
            ``"explain"`` (recomputing maps), ``"model"`` (forward passes).
        params: its parameters' defaults (the paper's).
        summary: one line: what it measures, and an all-zero map's score.
        paper: the citation.
        sign: how it reads the map's sign.
        channels: how it reduces colour channels (:data:`CHANNELS` for every metric).
        passes: the forward passes it runs per image, ``(height, width, params) -> count``
            (the unperturbed image counted), known before it runs; ``None`` for a metric
            that runs none or recomputes maps instead.
    """

    name: str
    title: str
    family: str
    higher_is_better: bool
    needs: Tuple[str, ...] = ("model",)
    params: Dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    paper: str = ""
    sign: str = _SIGNED
    channels: str = CHANNELS
    passes: Optional[Callable[[int, int, Dict[str, Any]], int]] = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ArgumentError(f"a metric's name is one word (letters, digits, _), got "
                                f"{self.name!r}")
        if self.family not in FAMILIES:
            raise ArgumentError(f"a metric's family is one of {', '.join(FAMILIES)}, got "
                                f"{self.family!r}")
        bad = [n for n in self.needs if n not in NEEDS]
        if bad:
            raise ArgumentError(f"a metric needs some of {', '.join(NEEDS)}, got {bad!r}")

    def __hash__(self) -> int:  # params is a dict: hash by name (names are unique)
        return hash(self.name)


def _steps(h: int, w: int, p: Dict[str, Any]) -> int:
    """Pixel flipping's, deletion's and insertion's images: ``ceil(P / steps)`` pixels a
    step, from none to all."""
    per = -(-(h * w) // max(1, int(p["steps"])))
    return len(range(0, h * w, per)) + 1


def _regions(h: int, w: int, p: Dict[str, Any]) -> int:
    cells = -(-h // int(p["patch_size"])) * -(-w // int(p["patch_size"]))
    return min(int(p["regions"]), cells) + 1


_BACH = "Bach et al. 2015, PLoS ONE (pixel flipping)"
_SAMEK = "Samek et al. 2017, IEEE TNNLS (region perturbation, AOPC)"
_RISE = "Petsiuk et al. 2018, BMVC (RISE: deletion and insertion)"
_ROAD = "Rong et al. 2022, ICML (ROAD: remove and debias)"
_GCPP = "Chattopadhay et al. 2018, WACV (Grad-CAM++)"
_TORCHRAY = "Zhang et al. 2018, IJCV (excitation backprop; TorchRay's pointing game)"
_ARRAS = "Arras et al. 2022, Information Fusion (CLEVR-XAI)"
_ADEBAYO = "Adebayo et al. 2018, NeurIPS (sanity checks)"
_SIXT = "Sixt et al. 2020, ICML (random logit)"
_CHALASANI = "Chalasani et al. 2020, ICML (sparseness: Gini)"
_BHATT = "Bhatt et al. 2020, IJCAI (faithfulness correlation, complexity)"
_YEH = "Yeh et al. 2019, NeurIPS (max-sensitivity)"
_ALVAREZ = "Alvarez-Melis & Jaakkola 2018 (local Lipschitz estimate)"
_RIEGER = "Rieger & Hansen 2020 (IROF)"
_WANG = "Wang et al. 2020, CVPR workshops (Score-CAM: energy-based pointing game)"

_BUILT_IN = (
    Metric("pixel_flipping", "pixel flipping", "faithfulness", False,
           params={"order": "morf", "steps": 16, "baseline": "black"},
           summary="area under the class probability as the most relevant pixels are "
                   "replaced, step by step (order=lerf: the least relevant, and higher is "
                   "better); an all-zero map removes pixels in raster order", paper=_BACH,
           passes=_steps),
    Metric("region_perturbation_morf", "region perturbation (MoRF)", "faithfulness", True,
           params={"order": "morf", "patch_size": 9, "regions": 100, "baseline": "uniform",
                   "incremental": None},
           summary="AOPC: the mean drop of the class probability as a grid's regions are "
                   "replaced, the most relevant first (the unperturbed step counts); an "
                   "all-zero map removes them in raster order", paper=_SAMEK, passes=_regions),
    Metric("region_perturbation_lerf", "region perturbation (LeRF)", "faithfulness", False,
           params={"order": "lerf", "patch_size": 9, "regions": 100, "baseline": "uniform",
                   "incremental": None},
           summary="the same with the least relevant regions first", paper=_SAMEK,
           passes=_regions),
    Metric("deletion", "deletion AUC", "faithfulness", False,
           params={"steps": 224, "substrate": "black"},
           summary="area under the class probability as the most relevant pixels are set "
                   "to the substrate; an all-zero map deletes in raster order", paper=_RISE,
           passes=_steps),
    Metric("insertion", "insertion AUC", "faithfulness", True,
           params={"steps": 224, "substrate": "blur", "blur_kernel": 11, "blur_sigma": 5.0},
           summary="area under the class probability as the most relevant pixels are "
                   "inserted into a blurred image", paper=_RISE, passes=_steps),
    Metric("road_morf", "ROAD (MoRF)", "faithfulness", False,
           params={"order": "morf", "percentages": (10, 20, 30, 40, 50, 60, 70, 80, 90),
                   "noise": 0.01, "output": "accuracy"},
           summary="the class's top-1 indicator (the paper's accuracy) as the most relevant "
                   "pixels are imputed by noisy linear imputation; score: the curve's mean; an "
                   "all-zero map removes pixels in raster order", paper=_ROAD,
           passes=lambda h, w, p: len(p["percentages"])),
    Metric("road_lerf", "ROAD (LeRF)", "faithfulness", True,
           params={"order": "lerf", "percentages": (10, 20, 30, 40, 50, 60, 70, 80, 90),
                   "noise": 0.01, "output": "accuracy"},
           summary="the same with the least relevant pixels first", paper=_ROAD,
           passes=lambda h, w, p: len(p["percentages"])),
    Metric("faithfulness_correlation", "faithfulness correlation", "faithfulness", True,
           params={"runs": 100, "subset_size": 224, "baseline": "black"},
           summary="Pearson correlation of the relevance of random pixel subsets with the "
                   "logit's drop when they are replaced; an all-zero map scores 0",
           paper=_BHATT, passes=lambda h, w, p: int(p["runs"]) + 1),
    Metric("irof", "IROF", "faithfulness", True,
           params={"segments": 100, "baseline": "mean", "incremental": None},
           summary="area over the class probability (relative to the image's) as SLIC "
                   "superpixels are replaced in order of their mean relevance; an all-zero map "
                   "removes them in label order", paper=_RIEGER,
           passes=lambda h, w, p: int(p["segments"]) + 1),  # SLIC's count is near it
    Metric("average_drop", "Average Drop", "confidence", False, params={},
           summary="100 max(0, y - o) / y: y the class probability of the image, o that of "
                   "the image times the map scaled to [0, 1]; an all-zero map masks the "
                   "whole image", paper=_GCPP,
           sign=_POSITIVE, passes=lambda h, w, p: 2),
    Metric("increase_in_confidence", "Increase in Confidence", "confidence", True, params={},
           summary="100 where the class probability rises when the image is multiplied by "
                   "the map scaled to [0, 1], else 0", paper=_GCPP, sign=_POSITIVE,
           passes=lambda h, w, p: 2),
    Metric("pointing_game", "pointing game", "localisation", True, ("boxes",),
           params={"tolerance": 15},
           summary="1 when the map's maximum lies less than the tolerance (px) from the "
                   "object, else 0; a constant (all-zero) map misses", paper=_TORCHRAY),
    Metric("relevance_mass", "relevance mass accuracy", "localisation", True, ("boxes",),
           params={}, summary="the share of positive relevance inside the object; an "
                              "all-zero map scores 0", paper=_ARRAS, sign=_POSITIVE),
    Metric("relevance_rank", "relevance rank accuracy", "localisation", True, ("boxes",),
           params={}, summary="the share of the map's K largest pixels on the object (K: the "
                              "object's pixels); a constant (all-zero) map scores 0",
           paper=_ARRAS),
    Metric("energy_pointing_game", "energy-based pointing game", "localisation", True,
           ("boxes",), params={},
           summary="the share of the map's positive energy inside the object; an all-zero "
                   "map scores 0", paper=_WANG, sign=_POSITIVE),
    Metric("model_randomisation", "model parameter randomisation", "randomisation", False,
           ("model", "explain"), params={"seed": 0},
           summary="Spearman correlation of |map| with |map| of the fully randomised "
                   "model (cascading, top down); lower is better; a constant map scores 0",
           paper=_ADEBAYO, sign=_ABS),
    Metric("random_logit", "random logit", "randomisation", False, ("model", "explain"),
           params={"seed": 0},
           summary="SSIM of the map of the class with the map of a random other class; "
                   "lower is better; two equal (e.g. all-zero) maps score 1", paper=_SIXT),
    Metric("sparseness", "sparseness (Gini)", "complexity", True, (), params={},
           summary="the Gini index of the absolute map; an all-zero map scores 0",
           paper=_CHALASANI, sign=_ABS),
    Metric("complexity", "complexity (entropy)", "complexity", False, (), params={},
           summary="the entropy of the absolute map's share per pixel; an all-zero map "
                   "scores log(H*W) (uniform)", paper=_BHATT, sign=_ABS),
    Metric("max_sensitivity", "max-sensitivity", "robustness", False, ("explain",),
           params={"samples": 200, "radius": 0.2},
           summary="the largest relative change of the map under uniform noise within the "
                   "radius; an all-zero map scores the largest absolute change", paper=_YEH),
    Metric("local_lipschitz", "local Lipschitz estimate", "robustness", False, ("explain",),
           params={"samples": 200, "std": 0.1},
           summary="the largest ratio of the map's change to the input's change under "
                   "Gaussian noise; defined for any map", paper=_ALVAREZ),
)
_TABLE: Dict[str, Metric] = {m.name: m for m in _BUILT_IN}


def register(metric: Metric) -> Metric:
    """Add ``metric`` to the table (its function is registered with
    :func:`deconvviz.analyses.evaluation.metric`)."""
    if metric.name in _TABLE:
        raise ArgumentError(f"a metric named {metric.name!r} exists already")
    _TABLE[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric added with :func:`register` (the built-in ones stay)."""
    if name in {m.name for m in _BUILT_IN}:
        raise ArgumentError(f"{name!r} is built in and cannot be removed")
    get(name)
    del _TABLE[name]


def get(name: str) -> Metric:
    """The metric called ``name``; an unknown name is refused, naming the valid ones."""
    if name in _TABLE:
        return _TABLE[name]
    valid = names()
    raise ArgumentError(f"unknown metric {name!r}.{closest(name, valid)} Valid metrics: "
                        f"{', '.join(valid)}.")


def entries(family: Optional[str] = None) -> List[Metric]:
    """The metrics (of ``family``), in the order they were added (the built-in ones first)."""
    if family is not None and family not in FAMILIES:
        raise ArgumentError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    return [m for m in _TABLE.values() if family is None or m.family == family]


def names(family: Optional[str] = None) -> List[str]:
    """The metrics' names (of ``family``)."""
    return [m.name for m in entries(family)]


def forward_passes(name: str, height: int, width: int,
                   params: Optional[Dict[str, Any]] = None) -> Optional[int]:
    """The forward passes metric ``name`` runs per image of ``height`` x ``width`` with
    ``params`` (over its defaults); ``None`` where it runs none, or recomputes maps. IROF's
    is its ``segments + 1``: SLIC makes about that many superpixels."""
    entry = get(name)
    if entry.passes is None:
        return None
    return entry.passes(height, width, {**entry.params, **(params or {})})


# what each parameter may be, by its name (the same meaning in every metric that has it)
_WHOLE = {"steps": 1, "patch_size": 1, "regions": 1, "runs": 2, "subset_size": 1,
          "segments": 2, "samples": 1, "blur_kernel": 1}
_POSITIVE_NUMBER = ("radius", "std", "blur_sigma")
_CHOICES = {"order": ("morf", "lerf"), "output": ("probability", "logit", "accuracy")}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_one(name: str, key: str, value: Any) -> None:
    def refuse(what: str) -> None:
        raise ArgumentError(f"{name}'s {key} is {what}, got {value!r}")

    if key in _WHOLE:
        if not isinstance(value, int) or isinstance(value, bool) or value < _WHOLE[key]:
            refuse(f"a whole number of at least {_WHOLE[key]}")
    elif key == "seed":
        if not isinstance(value, int) or isinstance(value, bool):
            refuse("a whole number")
    elif key in _POSITIVE_NUMBER:
        if not _is_number(value) or not value > 0:
            refuse("a number above 0")
    elif key in ("noise", "tolerance"):
        if not _is_number(value) or not value >= 0:
            refuse("a number of at least 0")
    elif key in _CHOICES:
        if value not in _CHOICES[key]:
            refuse(f"one of {', '.join(_CHOICES[key])}")
    elif key in ("baseline", "substrate"):
        named = BASELINES + (("blur",) if key == "substrate" else ())
        if not (_is_number(value) or value in named or type(value).__name__ == "Tensor"):
            refuse(f"a number or one of {', '.join(named)}")
    elif key == "percentages":
        if (isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not value
                or not all(_is_number(p) and 0 <= p < 100 for p in value)):
            refuse("a non-empty list of numbers in [0, 100)")
    elif key == "incremental":
        if value not in (None, True, False):
            refuse("None (the CPU's choice), True or False")


def check_params(name: str, params: Optional[Dict[str, Any]]) -> None:
    """Refuse, before anything runs, a parameter ``name`` does not take or a value it
    cannot take, naming the valid ones; and an ``order`` other than the one a metric's name
    says (``region_perturbation_morf`` with ``order="lerf"`` is ``region_perturbation_lerf``:
    evaluate that instead, so that its title and direction are right)."""
    entry = get(name)
    for key, value in (params or {}).items():
        if key not in entry.params:
            raise ArgumentError(f"metric {name!r} takes no parameter {key}; its parameters: "
                                f"{', '.join(entry.params) or 'none'}")
        _check_one(name, key, value)
        named = name.rsplit("_", 1)[-1]
        if key == "order" and named in _CHOICES["order"] and value != named:
            sibling = f"{name.rsplit('_', 1)[0]}_{value}"
            raise ArgumentError(f"{name}'s order is its name's ({named}); evaluate {sibling} "
                                f"instead")


def _flipped(name: str, params: Optional[Dict[str, Any]]) -> bool:
    """Whether ``params`` reverse the order of removal from the metric's default."""
    default = get(name).params.get("order")
    return default is not None and (params or {}).get("order", default) != default


def higher_is_better(name: str, params: Optional[Dict[str, Any]] = None) -> bool:
    """The direction of a better explanation under ``params`` (pixel flipping with the least
    relevant pixels first: higher is better)."""
    return get(name).higher_is_better != _flipped(name, params)


def title(name: str, params: Optional[Dict[str, Any]] = None) -> str:
    """How tables and figures name the metric under ``params``."""
    entry = get(name)
    if _flipped(name, params):
        return f"{entry.title} ({str(params['order']).replace('lerf', 'LeRF')})"
    return entry.title


def resolve(spec: str) -> List[str]:
    """Metric names from ``spec``: ``"all"``, a family's name, a metric's name, or a comma
    list of these (duplicates dropped, order kept)."""
    out: List[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if part == "all":
            found = names()
        elif part in FAMILIES:
            found = names(part)
        elif part in _TABLE:
            found = [part]
        else:
            valid = [*names(), *FAMILIES, "all"]
            raise ArgumentError(f"unknown metric {part!r}.{closest(part, valid)} Choose "
                                f"metrics ({', '.join(names())}), families "
                                f"({', '.join(FAMILIES)}) or all.")
        out += [n for n in found if n not in out]
    if not out:
        raise ArgumentError(f"no metric named in {spec!r}; choose metrics, families "
                            f"({', '.join(FAMILIES)}) or all")
    return out
