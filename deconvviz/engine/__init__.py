"""The engine: a front door over the passes that walk a traced graph, over the catalogue of
rules they ask (imports run that way only; import-linter holds it, docs/architecture.md).

=========================  ====================================================================
part                       job
=========================  ====================================================================
``projector``              :class:`Projector` / :class:`Deconvnet`: the engine's front door
``guard``                  eval mode first, device and precision, the model given back unchanged
``precision``              float32 throughout by default (TF32 off on CUDA); ``rel_error``
``passes``                 trace and capture, layout, layers, recording and re-recording, the
                           reverse loop, the cone and its plan, the incremental forward
``catalogue``              rules and rule sets: every op kind's rule, methods, LRP's rules and
                           composites (their vocabulary is data in :mod:`deconvviz.method_table`)
=========================  ====================================================================
"""
from ..method_table import LrpRule, register_composite
from .catalogue.lrp import Composite, relevance_method
from .catalogue.methods import (
    DECONVNET,
    GRADIENT,
    GUIDED,
    get_method,
    register_lrp_rule,
    register_method,
    unregister_lrp_rule,
    unregister_method,
)
from .catalogue.rules import Rule, RuleSet, register_rule, registered_rules, rule_table
from .passes.layers import Layer, list_layers
from .passes.recording import Recording
from .projector import (
    MODES,
    Deconvnet,
    Gradient,
    GuidedBackprop,
    Projector,
    ReversePass,
    ReverseStep,
)

__all__ = ["Composite", "relevance_method", "DECONVNET", "GRADIENT", "GUIDED", "Deconvnet", "Gradient",
           "GuidedBackprop", "Layer", "MODES", "Projector", "Recording",
           "ReversePass", "ReverseStep", "Rule", "RuleSet", "get_method", "list_layers",
           "register_method", "register_rule", "registered_rules", "rule_table",
           "unregister_method", "register_lrp_rule", "unregister_lrp_rule", "LrpRule",
           "register_composite"]
