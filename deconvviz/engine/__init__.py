"""The engine: tracing, recording, op rules and methods, one reverse loop, the cone, geometry.

==================  ===========================================================================
module              job
==================  ===========================================================================
``graph``           trace a model with torch.fx; classify every node by the rule that claims it
``rules``           the :class:`Rule` and :class:`RuleSet` types and the rule registry
``ops``             the built-in rule of every op kind (one registration each)
``pointwise``       activations, products (gates) and the exact-VJP fallback for other ops
``methods``         methods as rule sets (deconvnet, guided backprop, gradient, LRP's)
``lrp``             LRP: composites as data, the relevance rules of every op kind
``lrp_layers``      LRP's rules of layers with weights, BatchNorm folded from the graph
``geometry``        receptive-field and window arithmetic, padding resolved once
``recording``       one forward pass: activations, switches, inputs a method reads
``reverse``         the one reverse loop, and its full-size context
``cone``            the receptive-field cone: windows, and its context for the reverse loop
``layout``          channels-last maps (ConvNeXt's permutes) and the ops acting per position
``layers``          layer names, aliases, shapes and receptive fields
``projector``       :class:`Projector` / :class:`Deconvnet`: the engine's front door
``precision``       float32 throughout by default (TF32 off on CUDA), restoring the caller's flags
``plan``            the fastest exact plan per layer and device: the cone or the full-size pass
==================  ===========================================================================
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
