"""LRP's vocabulary, as data and without torch: its rules' names, titles and parameters, the
presets users type (``zplus``, ``alpha2beta1``), and :class:`Composite`, which says which rule
each layer takes. :mod:`deconvviz.method_table` keeps the composites offered as methods and
re-exports these names; each rule's arithmetic is the engine's
(:data:`deconvviz.engine.catalogue.lrp_layers.TERMS`)."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import ArgumentError

__all__ = ["PARAMETERS", "ATTENTION_RULES", "LrpRule", "RulePreset", "RuleSpec", "Composite", "lrp_rules",
           "rule_names", "resolve_rule", "rule_title", "split_spec"]

PARAMETERS = ("epsilon", "stabilizer", "gamma", "alpha", "beta", "low", "high")
"""A composite's constants, which its rules read (each rule names the ones it reads)."""

ATTENTION_RULES = {
    "conservative": "CP-LRP (Ali et al. 2022): the softmax is a constant of the input, the "
                    "gradient through queries and keys stopped; relevance goes down the values",
    "softmax": "AttnLRP (Achtibat et al. 2024): the softmax rule x·(R − s·ΣR) and the uniform "
               "rule (half to each factor) on the products of queries, keys and values",
}
"""How a composite's relevance goes through attention: each rule's name and what it does."""


@dataclass(frozen=True)
class LrpRule:
    """An LRP rule for the layers with weights (convolutions, linear layers).

    Attributes:
        name: what composites name it by (``Composite(conv="gamma")``).
        title: how method titles write it.
        parameters: the composite's constants it reads (of :data:`PARAMETERS`; every rule
            also reads ``stabilizer``).
        first_only: a rule only for the layer that reads the pixels (z^B).
        summary: one line: its formula.
    """

    name: str
    title: str
    parameters: Tuple[str, ...] = ()
    first_only: bool = False
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ArgumentError(f"an LRP rule's name is one word, got {self.name!r}")
        bad = [p for p in self.parameters if p not in PARAMETERS]
        if bad:
            raise ArgumentError(f"LRP rule {self.name!r}: unknown parameter(s) {bad}; a rule "
                                f"reads some of {', '.join(PARAMETERS)}")


@dataclass(frozen=True)
class RulePreset:
    """A name users type for a rule with some of its parameters set (``alpha2beta1``)."""

    name: str
    rule: str
    title: str
    values: Mapping[str, float] = field(default_factory=dict)


_RULES: Dict[str, LrpRule] = {r.name: r for r in (
    LrpRule("epsilon", "ε", ("epsilon",), summary="z = Wx + b (stabilised by ε): x·Wᵀ(R/z)"),
    LrpRule("alphabeta", "αβ", ("alpha", "beta"),
            summary="α times the positive contributions' share, minus β times the negative's"),
    LrpRule("gamma", "γ", ("gamma",), summary="W + γW⁺ for positive outputs, W + γW⁻ for "
                                              "negative ones"),
    LrpRule("flat", "flat", summary="all weights one: relevance spread evenly over the field"),
    LrpRule("wsquare", "w²", summary="z = W²1 + b²: relevance by the squared weights"),
    LrpRule("zbox", "z^B", ("low", "high"), first_only=True,
            summary="the pixels' bounds: x·Wᵀ − l·W⁺ᵀ − h·W⁻ᵀ"),
    LrpRule("identity", "identity",
            summary="relevance passes through unchanged (input and output of one size)"),
)}
_PRESETS: Dict[str, RulePreset] = {p.name: p for p in (
    RulePreset("zplus", "alphabeta", "z⁺", {"alpha": 1.0, "beta": 0.0}),
    RulePreset("alpha2beta1", "alphabeta", "α2β1", {"alpha": 2.0, "beta": 1.0}),
    RulePreset("alpha1beta0", "alphabeta", "α1β0", {"alpha": 1.0, "beta": 0.0}),
)}
# the order names are offered in (and one single-rule method each, lrp_<name>)
_RULE_ORDER = ["epsilon", "zplus", "alpha2beta1", "alpha1beta0", "gamma", "flat", "wsquare",
               "zbox"]


def lrp_rules() -> Dict[str, LrpRule]:
    """Every LRP rule, by name."""
    return dict(_RULES)


def rule_names() -> List[str]:
    """The names a composite may give a kind of layer: the presets and rules, in order (a
    rule whose parameters are all the composite's, such as ``alphabeta``, after them)."""
    return _RULE_ORDER + [r for r in _RULES if r not in _RULE_ORDER]


def resolve_rule(name: str) -> Tuple[LrpRule, Dict[str, float]]:
    """``(rule, values)`` of a rule or preset name: the rule and the parameters the name sets
    (none for a rule's own name)."""
    if name in _PRESETS:
        preset = _PRESETS[name]
        return _RULES[preset.rule], dict(preset.values)
    if name in _RULES:
        return _RULES[name], {}
    raise ArgumentError(f"unknown LRP rule {name!r}; choose one of {', '.join(rule_names())}")


def rule_title(name: str) -> str:
    """How titles write a rule or preset name."""
    return _PRESETS[name].title if name in _PRESETS else resolve_rule(name)[0].title


RuleSpec = Union[str, Tuple[str, Mapping[str, float]]]
"""A rule for one layer: a rule or preset name, or ``(name, {parameter: value})``."""


def split_spec(spec: RuleSpec) -> Tuple[str, Dict[str, float]]:
    """``(rule or preset name, the parameters it sets)`` of a :data:`RuleSpec`."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str) \
            and isinstance(spec[1], Mapping):
        return spec[0], dict(spec[1])
    raise ArgumentError(f"a layer's rule is a name or (name, {{parameter: value}}), got "
                        f"{spec!r}")


def _check_spec(spec: RuleSpec, where: str) -> None:
    name, values = split_spec(spec)
    if name not in _RULES and name not in _PRESETS:
        raise ArgumentError(f"unknown LRP rule {name!r} for {where}; choose one of "
                            f"{', '.join(rule_names())}")
    bad = [p for p in values if p not in PARAMETERS]
    if bad:
        raise ArgumentError(f"unknown parameter(s) {bad} for {where}; a rule reads some of "
                            f"{', '.join(PARAMETERS)}")


@dataclass(frozen=True)
class Composite:
    """An LRP composite: which rule each kind of layer with weights takes, and its constants.

    Attributes:
        name: the method's name (``--method NAME``).
        title: how figures name it.
        first: the rule (or preset) of a layer that reads the image (``None``: its kind's).
        conv: the rule of every other convolution.
        linear: the rule of every other linear layer.
        epsilon: the ε rule's ε.
        stabilizer: every other rule's stabiliser (zennit's default 1e-6).
        gamma: the γ rule's γ.
        alpha, beta: the αβ rule's α and β (a preset such as ``alpha2beta1`` sets its own).
        low, high: z^B's bounds per input channel (``None``: from the zoo model's
            preprocessing, the normalised [0, 1] range).
        summary: one line for the method table.
        by_name: module path pattern (``fnmatch``: ``"features.*"``, ``"classifier.6"``) ->
            the rule of the layers with weights there, a name or ``(name, {parameter:
            value})`` (zennit's ``NameMapComposite``); the first pattern that matches wins.
        by_type: module class name (``"Linear"``, ``"Conv2d"``, or a base class's) -> rule
            (zennit's ``MixedComposite`` of type maps). ``by_name`` comes first, then
            ``by_type``, then ``first``, ``conv`` and ``linear``.
        attention: the rule inside attention (:data:`ATTENTION_RULES`): ``"conservative"``
            (CP-LRP, the softmax held) or ``"softmax"`` (AttnLRP's softmax and uniform rules).

    Examples:
        >>> mine = Composite("lrp_mine", "LRP γ-ε", first="flat", conv="gamma", gamma=0.1)
        >>> register_composite(mine)  # then method="lrp_mine" everywhere
        >>> Composite("lrp_two", "LRP two γ", conv="epsilon",  # Captum's layer.rule = GammaRule(1)
        ...           by_name={"linear": ("gamma", {"gamma": 1.0}), "linear2": "identity"})
    """

    name: str
    title: str
    first: Optional[str] = "flat"
    conv: str = "zplus"
    linear: str = "epsilon"
    epsilon: float = 1e-6
    stabilizer: float = 1e-6
    gamma: float = 0.25
    alpha: float = 2.0
    beta: float = 1.0
    low: Optional[Sequence[float]] = None
    high: Optional[Sequence[float]] = None
    summary: str = field(default="", compare=False)
    by_name: Mapping[str, RuleSpec] = field(default_factory=dict, hash=False)
    by_type: Mapping[str, RuleSpec] = field(default_factory=dict, hash=False)
    attention: str = "conservative"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_RULES:
            raise ArgumentError(f"unknown attention rule {self.attention!r}; choose one of "
                                f"{', '.join(ATTENTION_RULES)}")
        for table, what in ((self.by_name, "layers named {}"), (self.by_type, "{} layers")):
            for key, spec in table.items():
                _check_spec(spec, what.format(repr(key)))
        for where in ("first", "conv", "linear"):
            name = getattr(self, where)
            if name is None and where == "first":
                continue
            if name not in _RULES and name not in _PRESETS:
                raise ArgumentError(f"unknown LRP rule {name!r} for {where} layers; choose "
                                    f"one of {', '.join(rule_names())}")
            if where != "first" and resolve_rule(name)[0].first_only:
                raise ArgumentError(f"{name} is a rule for the layer that reads the pixels: "
                                    f"give it as first={name!r}")
        if min(self.epsilon, self.stabilizer, self.gamma, self.alpha, self.beta) < 0:
            raise ArgumentError("epsilon, stabilizer, gamma, alpha and beta are >= 0")

    def rules(self) -> List[str]:
        """The rule (or preset) names it uses."""
        mapped = [split_spec(s)[0] for s in (*self.by_name.values(), *self.by_type.values())]
        return list(dict.fromkeys(r for r in (self.first, self.conv, self.linear, *mapped)
                                  if r is not None))

    def mapped_rule(self, path: str, types: Sequence[str]) -> Optional[Tuple[str, Dict]]:
        """The rule ``(name, parameters)`` that ``by_name`` (the module path ``path``) or
        ``by_type`` (the class names ``types``, the module's class first) give a layer;
        ``None`` where neither does."""
        for pattern, spec in self.by_name.items():
            if fnmatch.fnmatchcase(path, pattern):
                return split_spec(spec)
        for name in types:
            if name in self.by_type:
                return split_spec(self.by_type[name])
        return None

    def parameters(self, name: str, values: Optional[Mapping[str, float]] = None
                   ) -> Dict[str, object]:
        """The constants the rule (or preset) ``name`` runs with here: the composite's, the
        preset's values over them, and ``values`` (a layer's own, from ``by_name`` or
        ``by_type``) over those."""
        out: Dict[str, object] = {p: getattr(self, p) for p in PARAMETERS}
        out.update(resolve_rule(name)[1])
        out.update(values or {})
        return out
