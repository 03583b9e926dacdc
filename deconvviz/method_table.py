"""Every method deconvviz offers, in one table, without importing torch.

The command line's choices, :func:`deconvviz.list_methods`, :func:`deconvviz.attribute`, the
explorer's picker, :func:`deconvviz.compare` and :func:`deconvviz.sanity_check` all read this
table: a method's name, title, kind, display convention and what it can explain are written
here once. The reverse passes' rules live in the engine (:mod:`deconvviz.engine.methods`); a new
reverse-pass method is one call of :func:`deconvviz.engine.register_method` with its rule set,
which adds it to the engine and to this table.

===========================  =============  ==========  ===============  ==================
method                       kind           display     explains         channels
===========================  =============  ==========  ===============  ==================
``deconvnet``                reverse pass   signed      unit, class      3
``guided``                   reverse pass   signed      unit, class      3
``gradient``                 reverse pass   signed      unit, class      3
``lrp`` (ε-z⁺-flat)          reverse pass   signed      unit, class      3
``lrp_epsilon_gamma_box``    reverse pass   signed      unit, class      3
``lrp_epsilon_alpha2beta1_flat``  reverse pass  signed  unit, class      3
``lrp_<rule>`` (8 rules)     reverse pass   signed      unit, class      3
``gradcam``                  attribution    heatmap     class, unit      1
``guided_gradcam``           attribution    signed      class, unit      3
``integrated_gradients``     attribution    signed      class, unit      3
``smoothgrad``               attribution    signed      class, unit      3
``occlusion``                attribution    heatmap     class, unit      3
===========================  =============  ==========  ===============  ==================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .errors import ArgumentError, closest

__all__ = ["Method", "KINDS", "DISPLAYS", "TARGETS", "get", "names", "titles", "entries",
           "displays", "COMPARE_DEFAULT", "SANITY_DEFAULT", "register", "unregister", "check", "REVERSE", "ATTRIBUTION"]

REVERSE = "reverse pass"  # an exact reverse pass on deconvviz's engine
ATTRIBUTION = "attribution"  # Captum's (or built from Captum's and a reverse pass)
KINDS = (REVERSE, ATTRIBUTION)
DISPLAYS = ("signed", "heatmap")  # how a figure draws the method's maps (figures.display)
TARGETS = ("unit", "class")


@dataclass(frozen=True)
class Method:
    """One method: what every caller needs to know of it, and nothing of how it runs.

    Attributes:
        name: what users type (``--method guided``, ``attribute(..., "guided")``).
        title: how figures and tables name it (``"guided backprop"``).
        kind: ``"reverse pass"`` (deconvviz's engine: exact, any layer, the cone) or
            ``"attribution"`` (Captum's).
        display: ``"signed"`` (a signed map, drawn as the paper draws projections) or
            ``"heatmap"`` (a non-negative map over the photo).
        explains: what it can explain: ``"unit"`` (a feature of a layer), ``"class"``.
        channels: the channels of its map: 3 (per colour), or 1 (Grad-CAM's map).
        summary: one line: what it does.
    """

    name: str
    title: str
    kind: str
    display: str = "signed"
    explains: Tuple[str, ...] = TARGETS
    channels: int = 3
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ArgumentError(f"a method's name is one word (letters, digits, _), got "
                                f"{self.name!r}")
        for field, value, valid in [("kind", self.kind, KINDS),
                                    ("display", self.display, DISPLAYS)]:
            if value not in valid:
                raise ArgumentError(f"a method's {field} is one of {', '.join(valid)}, got "
                                    f"{value!r}")
        bad = [t for t in self.explains if t not in TARGETS]
        if bad or not self.explains:
            raise ArgumentError(f"a method explains some of {', '.join(TARGETS)}, got "
                                f"{self.explains!r}")
        if self.channels not in (1, 3):
            raise ArgumentError(f"a method's map has 1 or 3 channels, got {self.channels}")

    @property
    def is_reverse_pass(self) -> bool:
        return self.kind == REVERSE


_BUILT_IN = (
    Method("deconvnet", "deconvnet", REVERSE,
           summary="Zeiler & Fergus: unpool through the switches, rectify, transposed filters"),
    Method("guided", "guided backprop", REVERSE,
           summary="Springenberg et al.: the gradient, rectified and masked at every ReLU"),
    Method("gradient", "gradient", REVERSE,
           summary="the exact gradient of the unit or class with respect to the pixels"),
    # LRP (deconvviz.engine.lrp): zennit's composites, then one method per rule
    Method("lrp", "LRP ε-z⁺-flat", REVERSE,
           summary="LRP, zennit's EpsilonPlusFlat: flat on the first layer, z+ on "
                   "convolutions, epsilon on linear layers"),
    Method("lrp_epsilon_gamma_box", "LRP ε-γ-box", REVERSE,
           summary="LRP, zennit's EpsilonGammaBox: z^B on the pixels, gamma on convolutions, "
                   "epsilon on linear layers"),
    Method("lrp_epsilon_alpha2beta1_flat", "LRP ε-α2β1-flat", REVERSE,
           summary="LRP, zennit's EpsilonAlpha2Beta1Flat: flat on the first layer, alpha=2 "
                   "beta=1 on convolutions, epsilon on linear layers"),
    *(Method(f"lrp_{rule}", f"LRP {title}", REVERSE,
             summary=f"LRP's {title} rule on every convolution and linear layer")
      for rule, title in (("epsilon", "ε"), ("zplus", "z⁺"), ("alpha2beta1", "α2β1"),
                          ("alpha1beta0", "α1β0"), ("gamma", "γ"), ("flat", "flat"),
                          ("wsquare", "w²"))),
    Method("lrp_zbox", "LRP z^B", REVERSE,
           summary="LRP's z^B rule on the pixels, epsilon on every other layer"),
    Method("gradcam", "Grad-CAM", ATTRIBUTION, "heatmap", ("class", "unit"), 1,
           summary="Captum's LayerGradCam at the last convolutional block, upsampled"),
    Method("guided_gradcam", "guided Grad-CAM", ATTRIBUTION, "signed", ("class", "unit"),
           summary="deconvviz's exact guided backprop times the upsampled Grad-CAM"),
    Method("integrated_gradients", "integrated gradients", ATTRIBUTION, "signed",
           ("class", "unit"), summary="Captum's IntegratedGradients from the mean-colour image"),
    Method("smoothgrad", "SmoothGrad", ATTRIBUTION, "signed", ("class", "unit"),
           summary="Captum's NoiseTunnel over the plain gradient"),
    Method("occlusion", "occlusion", ATTRIBUTION, "heatmap", ("class", "unit"),
           summary="Captum's Occlusion: the output's drop under a sliding mean-colour square"),
)
_TABLE: Dict[str, Method] = {m.name: m for m in _BUILT_IN}

COMPARE_DEFAULT = ("deconvnet", "guided", "gradient", "gradcam", "guided_gradcam")
"""What :func:`deconvviz.compare` shows unless told (Grad-CAM's Fig. 1 and more)."""
SANITY_DEFAULT = ("deconvnet", "guided", "gradient", "gradcam", "lrp",
                  "lrp_epsilon_alpha2beta1_flat", "lrp_epsilon_gamma_box")
"""What :func:`deconvviz.sanity_check` randomises under unless told (Adebayo's Fig. 2, and
LRP's three composites: Sixt et al. 2020)."""


def register(method: Method) -> Method:
    """Add ``method`` to the table (a reverse pass goes through
    :func:`deconvviz.engine.register_method`, which also registers its rules)."""
    if method.name in _TABLE:
        raise ArgumentError(f"a method named {method.name!r} exists already")
    _TABLE[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method added with :func:`register` (the built-in ones stay)."""
    if name in {m.name for m in _BUILT_IN}:
        raise ArgumentError(f"{name!r} is built in and cannot be removed")
    get(name)
    del _TABLE[name]


def get(name: str) -> Method:
    """The method called ``name``; an unknown name is refused, naming the valid ones."""
    return _TABLE[check(name)]


def check(name: str, kind: Optional[str] = None) -> str:
    """``name`` if it is a method (of ``kind``, when given); else the error names the choices."""
    valid = names(kind)
    if name in valid:
        return name
    if name in _TABLE:
        raise ArgumentError(f"{name!r} is not a {kind} method; choose one of "
                            f"{', '.join(valid)}")
    raise ArgumentError(f"unknown method {name!r}.{closest(name, valid)} Valid methods: "
                        f"{', '.join(valid)}.")


def entries(kind: Optional[str] = None) -> List[Method]:
    """The methods (of ``kind``), in the order they were added (the built-in ones first)."""
    if kind is not None and kind not in KINDS:
        raise ArgumentError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    return [m for m in _TABLE.values() if kind is None or m.kind == kind]


def names(kind: Optional[str] = None) -> List[str]:
    """The methods' names (of ``kind``)."""
    return [m.name for m in entries(kind)]


def titles() -> Dict[str, str]:
    """Method name -> title, for figures and tables."""
    return {m.name: m.title for m in _TABLE.values()}


def displays() -> Dict[str, str]:
    """Method name -> display convention (``"signed"`` or ``"heatmap"``), for figures."""
    return {m.name: m.display for m in _TABLE.values()}
