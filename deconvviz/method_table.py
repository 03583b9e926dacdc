"""Every method deconvviz offers, in one table, without importing torch.

The command line's choices, :func:`deconvviz.list_methods`, :func:`deconvviz.attribute`, the
explorer's picker, :func:`deconvviz.compare` and :func:`deconvviz.sanity_check` all read this
table: a method's name, title, kind, display convention and what it can explain are written
here once. The reverse passes' rules live in the engine (:mod:`deconvviz.engine.catalogue.methods`); a new
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
``lrp_attn`` (AttnLRP)       reverse pass   signed      unit, class      3
``lrp_cp`` (CP-LRP)          reverse pass   signed      unit, class      3
``gradcam``                  attribution    heatmap     class, unit      1
``guided_gradcam``           attribution    signed      class, unit      3
``integrated_gradients``     attribution    signed      class, unit      3
``smoothgrad``               attribution    signed      class, unit      3
``occlusion``                attribution    heatmap     class, unit      3
``hirescam``, ``gradcam_elementwise``, ``gradcam_plus_plus``, ``xgradcam``, ``layercam``,
``eigengradcam``, ``eigencam``, ``scorecam``, ``ablationcam``, ``fullgrad``: the CAM family,
                             attribution    heatmap     class, unit      1
                             (``eigencam``: class)
``attention_rollout``, ``chefer_gae``: a ViT's attention,
                             attribution    heatmap     class            1
===========================  =============  ==========  ===============  ==================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .errors import ArgumentError, closest

__all__ = ["Method", "KINDS", "DISPLAYS", "TARGETS", "get", "names", "titles", "entries",
           "displays", "COMPARE_DEFAULT", "SANITY_DEFAULT", "register", "unregister", "check",
           "REVERSE", "ATTRIBUTION", "LrpRule", "RulePreset", "Composite", "lrp_rules",
           "rule_names", "resolve_rule", "composites", "RuleSpec", "split_spec", "register_lrp_rule",
           "unregister_lrp_rule", "register_composite", "COMPOSITES", "RULE_METHODS", "TRANSFORMER_COMPOSITES",
           "ATTENTION_RULES"]

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
        relevance: an LRP method (its maps are relevance: CRP and relevance scans take it).
    """

    name: str
    title: str
    kind: str
    display: str = "signed"
    explains: Tuple[str, ...] = TARGETS
    channels: int = 3
    summary: str = ""
    relevance: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ArgumentError(f"a method's name is one word (letters, digits, _), got "
                                f"{self.name!r}")
        for attr, value, valid in [("kind", self.kind, KINDS),
                                   ("display", self.display, DISPLAYS)]:
            if value not in valid:
                raise ArgumentError(f"a method's {attr} is one of {', '.join(valid)}, got "
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
    # then LRP's composites (from the table below), then Captum's
)
_ATTRIBUTIONS = (
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
    # The CAM family (analyses/cams.py): a class's (or a unit's) map at a layer (or several,
    # fused), rectified, scaled to [0, 1] and upsampled as pytorch-grad-cam does. Eigen-CAM
    # has no target (its map is the same for every class): it is a class's map only.
    Method("hirescam", "HiResCAM", ATTRIBUTION, "heatmap", ("class", "unit"), 1,
           summary="Draelos & Carin 2020: the gradient times the activations, summed over "
                   "channels"),
    Method("gradcam_elementwise", "Grad-CAM element-wise", ATTRIBUTION, "heatmap",
           ("class", "unit"), 1, summary="the gradient times the activations, rectified, summed"),
    Method("gradcam_plus_plus", "Grad-CAM++", ATTRIBUTION, "heatmap", ("class", "unit"), 1,
           summary="Chattopadhay et al. 2018: second- and third-order weights of the gradient"),
    Method("xgradcam", "XGrad-CAM", ATTRIBUTION, "heatmap", ("class", "unit"), 1,
           summary="Fu et al. 2020: the gradient weighted by the normalised activations"),
    Method("layercam", "LayerCAM", ATTRIBUTION, "heatmap", ("class", "unit"), 1,
           summary="Jiang et al. 2021: the positive gradient times the activations, per "
                   "position"),
    Method("eigengradcam", "EigenGrad-CAM", ATTRIBUTION, "heatmap", ("class", "unit"), 1,
           summary="the first principal component of the gradient times the activations"),
    Method("eigencam", "Eigen-CAM", ATTRIBUTION, "heatmap", ("class",), 1,
           summary="Muhammad & Yeasin 2020: the activations' first principal component "
                   "(class-agnostic)"),
    Method("scorecam", "Score-CAM", ATTRIBUTION, "heatmap", ("class", "unit"), 1,
           summary="Wang et al. 2020: the class logit of the input masked by each channel"),
    Method("ablationcam", "Ablation-CAM", ATTRIBUTION, "heatmap", ("class", "unit"), 1,
           summary="Desai & Ramaswamy 2020: the logit's drop with each channel set to zero"),
    Method("fullgrad", "FullGrad", ATTRIBUTION, "heatmap", ("class", "unit"), 1,
           summary="Srinivas & Fleuret 2019: |input gradient x input| and every layer's "
                   "|bias x gradient|, summed"),
    # Read from a vision transformer's attention (analyses/attention_maps.py): the class
    # token's row over the patch grid, upsampled and scaled to [0, 1] as the CAMs are.
    Method("attention_rollout", "attention rollout", ATTRIBUTION, "heatmap", ("class",), 1,
           summary="Abnar & Zuidema 2020: the product of the layers' head-averaged "
                   "attention plus identity (class-agnostic)"),
    Method("chefer_gae", "Chefer et al. (GAE)", ATTRIBUTION, "heatmap", ("class",), 1,
           summary="Chefer et al. 2021: R += mean over heads of (grad A * A)+ @ R, layer by "
                   "layer"),
)
# LRP's vocabulary (deconvviz.lrp_vocabulary): rules, presets, composites ---------------------
from .lrp_vocabulary import (  # noqa: E402  (re-exported: the method table's vocabulary)
    _PRESETS,
    _RULE_ORDER,
    _RULES,
    ATTENTION_RULES,
    Composite,
    LrpRule,
    RulePreset,
    RuleSpec,
    lrp_rules,
    resolve_rule,
    rule_names,
    rule_title,
    split_spec,
)


def _zennit(name: str, title: str, first: str, conv: str, zennit: str, said: str) -> Composite:
    return Composite(name, title, first=first, conv=conv, linear="epsilon",
                     summary=f"LRP, zennit's {zennit}: {said}, epsilon on linear layers")


COMPOSITES = (
    _zennit("lrp", "LRP ε-z⁺-flat", "flat", "zplus", "EpsilonPlusFlat",
            "flat on the first layer, z+ on convolutions"),
    _zennit("lrp_epsilon_gamma_box", "LRP ε-γ-box", "zbox", "gamma", "EpsilonGammaBox",
            "z^B on the pixels, gamma on convolutions"),
    _zennit("lrp_epsilon_alpha2beta1_flat", "LRP ε-α2β1-flat", "flat", "alpha2beta1",
            "EpsilonAlpha2Beta1Flat", "flat on the first layer, alpha=2 beta=1 on convolutions"),
)
"""zennit's composites, by their names in zennit."""


def _single(rule: str) -> Composite:
    if rule == "zbox":
        return Composite("lrp_zbox", "LRP z^B", first="zbox", conv="epsilon", linear="epsilon",
                         summary="LRP's z^B rule on the pixels, epsilon on every other layer")
    return Composite(f"lrp_{rule}", f"LRP {rule_title(rule)}", first=None, conv=rule,
                     linear=rule, summary=f"LRP's {rule} rule on every convolution and linear "
                                          f"layer")


RULE_METHODS = tuple(_single(rule) for rule in _RULE_ORDER)
"""One method per rule: the rule on every layer with weights (z^B on the first, ε above)."""

def _transformer(name: str, title: str, attention: str, said: str) -> Composite:
    # LXT computes LRP as gradient times input: the ε rule with no ε on the linear layers,
    # and no stabiliser on a sum's or a softmax's share; a vanishing one here
    return Composite(name, title, first=None, conv="epsilon", linear="epsilon",
                     epsilon=1e-9, stabilizer=1e-9, attention=attention,
                     summary=f"{said}; LayerNorm by the identity rule (its std held), GELU "
                             f"passes, epsilon (1e-9) on linear layers and convolutions")


TRANSFORMER_COMPOSITES = (
    _transformer("lrp_attn", "AttnLRP", "softmax",
                 "Achtibat et al. 2024: the softmax rule and the uniform rule inside attention"),
    _transformer("lrp_cp", "CP-LRP", "conservative",
                 "Ali et al. 2022, as LXT 2.1 runs torchvision's ViT: the softmax held, "
                 "relevance down the values"),
)
"""The transformers' composites (docs/transformers_methods.md): LXT 2.1's rules for a ViT."""
_COMPOSITES: Dict[str, Composite] = {c.name: c for c in (*COMPOSITES, *RULE_METHODS,
                                                          *TRANSFORMER_COMPOSITES)}


def _relevance_entry(c: Composite) -> Method:
    return Method(c.name, c.title, REVERSE, summary=c.summary, relevance=True)


_BUILT_IN = (*_BUILT_IN, *(_relevance_entry(c) for c in _COMPOSITES.values()), *_ATTRIBUTIONS)
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
    _COMPOSITES.pop(name, None)


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


def composites() -> Dict[str, Composite]:
    """Every LRP composite (the built-in ones and those registered), by method name."""
    return dict(_COMPOSITES)


def register_composite(composite: Composite) -> Method:
    """Add an LRP composite: a method like any other (``method=composite.name`` in every
    function, ``--method`` on the command line), its rule set built by the engine from this
    entry. :func:`unregister` removes it."""
    method = register(_relevance_entry(composite))
    _COMPOSITES[composite.name] = composite
    return method


def register_lrp_rule(rule: LrpRule) -> LrpRule:
    """Add an LRP rule to the vocabulary (its term builder is the engine's:
    :func:`deconvviz.engine.register_lrp_rule` adds both)."""
    if rule.name in _RULES or rule.name in _PRESETS:
        raise ArgumentError(f"an LRP rule named {rule.name!r} exists already")
    _RULES[rule.name] = rule
    return rule


def unregister_lrp_rule(name: str) -> None:
    """Remove a rule added with :func:`register_lrp_rule` (no composite may still use it)."""
    if name in _RULE_ORDER or name in ("alphabeta", "identity") or name not in _RULES:
        raise ArgumentError(f"{name!r} is not an LRP rule added with register_lrp_rule")
    users = [c.name for c in _COMPOSITES.values() if name in c.rules()]
    if users:
        raise ArgumentError(f"LRP rule {name!r} is used by {', '.join(users)}: unregister "
                            f"them first")
    del _RULES[name]
