"""Rules: everything deconvviz knows about one kind of op, and rule sets (methods).

A :class:`Rule` is registered once per op kind (``conv``, ``relu``, ``maxpool``, ...) in
:mod:`deconvviz.engine.catalogue.ops`. It holds

- which modules, functions and tensor methods are that kind, and how to read their
  parameters (``parse``);
- how the op runs in reverse on full-size signals (``reverse``), and on the stacked windows of
  the receptive-field cone where that differs (``cone_reverse``);
- how it maps a window of its output to a window of its input (``window``) and its
  receptive-field arithmetic (``field``);
- a one-line ``description`` of its reverse step, from which the documentation tables and
  ``print(net.reverse_pass(layer))`` are generated;
- the forward state it reads (``needs``: max-pool switches, a ReLU's input).

Linear ops have one reverse, their transpose, whatever the method. The ops in which methods
differ (ReLU, other activations, local response normalisation) register no reverse of their
own: a :class:`RuleSet` (a method, such as the deconvnet) supplies it, and a rule set's
``fallback`` takes every op no rule claims. zennit's composites are the
model: a method is a mapping from op kinds to rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

__all__ = ["Rule", "RuleSet", "Unsupported", "register_rule", "registered_rules", "get_rule",
           "lookup_tables", "claiming_rule", "rule_table"]

ReverseFn = Callable[..., List[Tuple[Any, Any]]]


class Unsupported(Exception):
    """Raised by a rule's ``parse`` for a call of its kind that it cannot undo (the message is
    the op's label in the error the user sees)."""


def _no_params(call) -> Tuple[str, Dict[str, Any]]:
    return call.default_label, {}


@dataclass(frozen=True)
class Rule:
    """Everything about one op kind. See the module docstring.

    Attributes:
        kind: the op kind (``"conv"``).
        description: the reverse step in one line (``"transposed convolution, same weights,
            no bias"``).
        reverse: ``reverse(op, signal, ctx) -> [(input node, signal), ...]`` on full-size
            signals; ``None`` where each method supplies its own.
        modules, functions, methods: what is this kind: ``nn.Module`` types (exact type),
            functions (``F.relu``) and tensor method names (``"relu"``).
        parse: ``parse(call) -> (label, params)``; raises :class:`Unsupported` for a call it
            cannot undo.
        window: ``window(op, out_window, shapes) -> in_window`` for the cone, ``None`` where
            the op mixes all positions (the cone is then the whole image).
        field: ``field(op, in_fields, in_shapes, out_shape) -> Geometry or None``.
        cone_reverse: the reverse on stacked windows, where it differs from ``reverse``.
        check: ``check(op, layer)`` raises ``UnsupportedOpError`` when the op is in a state
            its reverse cannot undo (BatchNorm in training mode).
        needs: forward state the reverse reads: ``"switches"``, ``"input"`` (the op's first
            input), ``"arguments"`` (every tensor it takes).
        when: for a rule that shares its modules, functions or methods with another:
            ``when(call) -> bool`` says whether this rule claims the call (a product of two
            signals is a ``mul`` as a scale by a constant is).
        reaches: ``reaches(op) -> [input node, ...]``: the inputs the reverse sends a signal
            to (by default every input from the image); a gate's branch is not reached.
    """

    kind: str
    description: str
    reverse: Optional[ReverseFn]
    modules: Tuple[type, ...] = ()
    functions: Tuple[Callable, ...] = ()
    methods: Tuple[str, ...] = ()
    parse: Callable = _no_params
    window: Optional[Callable] = None
    field: Optional[Callable] = None
    cone_reverse: Optional[ReverseFn] = None
    check: Optional[Callable] = None
    needs: FrozenSet[str] = frozenset()
    when: Optional[Callable] = None
    reaches: Optional[Callable] = None

    def inputs_reached(self, op) -> List[Any]:
        """The op's inputs this rule's reverse sends a signal to."""
        return list(self.reaches(op)) if self.reaches is not None else list(op.inputs)


_RULES: Dict[str, Rule] = {}
_MODULES: Dict[type, Rule] = {}
_FUNCTIONS: Dict[Callable, Rule] = {}
_METHODS: Dict[str, Rule] = {}
# Rules with a ``when``: they claim a call before the target's plain rule, when it fits.
_GUARDED: Dict[Any, List[Rule]] = {}


def register_rule(rule: Rule) -> Rule:
    """Add the rule of a new op kind; a kind, module type, function or method can be claimed
    by one rule only, unless the rule says ``when`` it claims a call."""
    if rule.kind in _RULES:
        raise ValueError(f"a rule for op kind {rule.kind!r} is already registered")
    tables = ((rule.modules, _MODULES, "module"), (rule.functions, _FUNCTIONS, "function"),
              (rule.methods, _METHODS, "method"))
    if rule.when is None:
        for claimed, table, _ in tables:
            for item in claimed:
                if item in table:
                    raise ValueError(f"{getattr(item, '__name__', item)!r} already belongs to "
                                     f"the {table[item].kind!r} rule")
    _RULES[rule.kind] = rule
    for claimed, table, kind in tables:
        for item in claimed:
            if rule.when is None:
                table[item] = rule
            else:
                _GUARDED.setdefault((kind, item), []).append(rule)
    return rule


def claiming_rule(kind: str, target: Any, call) -> Optional[Rule]:
    """The rule that claims ``call`` of a ``module`` type, ``function`` or ``method`` name
    ``target``: the first guarded rule whose ``when`` holds, else the target's plain rule."""
    for rule in _GUARDED.get((kind, target), ()):
        if rule.when(call):
            return rule
    table = {"module": _MODULES, "function": _FUNCTIONS, "method": _METHODS}[kind]
    return table.get(target)


def registered_rules() -> List[Rule]:
    """Every registered rule, in registration order."""
    return list(_RULES.values())


def get_rule(kind: str) -> Optional[Rule]:
    """The registered rule of ``kind``, ``None`` if there is none."""
    return _RULES.get(kind)


def lookup_tables() -> Tuple[Mapping[type, Rule], Mapping[Callable, Rule], Mapping[str, Rule]]:
    """(module type -> rule, function -> rule, tensor method name -> rule)."""
    return _MODULES, _FUNCTIONS, _METHODS


@dataclass(frozen=True)
class RuleSet:
    """A method: a name, and the reverse rule of every op kind.

    Every registered rule is used as it is, except where ``overrides`` gives the kind a rule
    of the method's own (as ``(reverse, description)``, or a full :class:`Rule`). A kind whose
    registered rule has no reverse and that the method does not override has no rule in this
    method: an op of that kind on the path raises ``UnsupportedOpError``.

    Attributes:
        name: the method's name (``"deconvnet"``).
        title: how figures and errors name it (``"deconvnet"``, ``"guided backprop"``).
        overrides: op kind -> ``(reverse, description)``, ``(reverse, description,
            needs)`` or a :class:`Rule`.
        cone_overrides: op kind -> reverse on the cone's windows, where it differs.
        needs: forward state the method's own rules read.
        fallback: the rule of every op no other rule of the method takes (an op no rule
            claims, or whose call its rule cannot undo); its ``when(op)`` says which ops it
            can take. ``None``: such ops are refused.
        relevance: an LRP rule set (:mod:`deconvviz.engine.catalogue.lrp`): a class is seeded with its
            logit, not 1, and the receptive-field cone is not used (its rules read whole maps).
    """

    name: str
    title: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    cone_overrides: Mapping[str, ReverseFn] = field(default_factory=dict)
    needs: FrozenSet[str] = frozenset()
    fallback: Optional[Rule] = None
    relevance: bool = False

    def rule(self, kind: str) -> Optional[Rule]:
        """The rule this method applies to ``kind`` (``None``: no rule)."""
        base = get_rule(kind)
        if kind in self.overrides:
            own = self.overrides[kind]
            if isinstance(own, Rule):
                return own
            if base is None:
                return None
            reverse, description, *needs = own
            return replace(base, reverse=reverse, description=description,
                           cone_reverse=self.cone_overrides.get(kind, base.cone_reverse),
                           needs=base.needs | frozenset(*needs))
        return base if base is not None and base.reverse is not None else None

    def rule_of(self, op) -> Optional[Rule]:
        """The rule this method applies to the traced op ``op`` (``None``: it refuses it):
        its kind's rule, else the method's fallback where that can take it."""
        if op.kind != "unsupported":
            rule = self.rule(op.kind)
            if rule is not None:
                return rule
        fallback = self.fallback
        if fallback is not None and (fallback.when is None or fallback.when(op)):
            return fallback
        return None

    def rules(self) -> List[Rule]:
        """The rules of every kind this method can undo, in registration order."""
        return [r for r in (self.rule(b.kind) for b in registered_rules()) if r is not None]

    def needs_for(self, kinds: Iterable[str]) -> FrozenSet[str]:
        """The forward state a reverse pass through ops of ``kinds`` reads."""
        out = set(self.needs)
        for kind in kinds:
            rule = self.rule(kind)
            if rule is not None:
                out |= rule.needs
        return frozenset(out)


def rule_table(rulesets: Sequence[RuleSet]) -> str:
    """A Markdown table: one row per op kind, what it matches, and each method's reverse step
    (``no rule`` where a method has none). The documentation's tables are this output."""
    head = ["op kind", "forward ops"] + [r.title for r in rulesets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for base in registered_rules():
        matches = ([m.__name__ for m in base.modules]
                   + [f"{_function_name(f)}" for f in base.functions]
                   + [f".{m}()" for m in base.methods])
        cells = [f"`{base.kind}`", ", ".join(dict.fromkeys(matches))]
        for ruleset in rulesets:
            rule = ruleset.rule(base.kind)
            cells.append(rule.description if rule is not None else "no rule")
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.fallback is not None for r in rulesets):
        fallback = next(r.fallback for r in rulesets if r.fallback is not None)
        cells = [f"`{fallback.kind}`", "any other op autograd can differentiate (LayerNorm, "
                 "GroupNorm, .permute(), Sigmoid, Tanh, division, ...)"]
        cells += [r.fallback.description if r.fallback is not None else "no rule"
                  for r in rulesets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _function_name(f: Callable) -> str:
    import torch.nn.functional as F

    module = getattr(f, "__module__", "") or ""
    name = getattr(f, "__name__", str(f))
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    if getattr(F, name, None) is f:
        return f"F.{name}"
    return f"torch.{name}" if module.startswith("torch") else name
