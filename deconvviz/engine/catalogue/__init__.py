"""The catalogue of rules: what each op kind does on the way down, and methods as rule sets.

Nothing here walks a graph; the passes (:mod:`deconvviz.engine.passes`) ask it, op by op.

==================  ===========================================================================
module              job
==================  ===========================================================================
``rules``           the :class:`Rule` and :class:`RuleSet` types and the rule registry
``geometry``        receptive-field and window arithmetic, padding resolved once
``ops``             the built-in rule of every op kind (one registration each)
``ops_common``      helpers the op rules share (transposes, windows, broadcasting)
``ops_shape``       average pools, transposes, reshapes, concatenation, addition, scaling
``pointwise``       activations, products (gates) and the exact-VJP fallback for other ops
``forward_windows`` each sliding or pointwise op's forward window, for the incremental pass
``methods``         methods as rule sets (deconvnet, guided backprop, gradient, LRP's)
``lrp``             LRP: a composite's rule set, the relevance rules of every op kind
``lrp_layers``      LRP's term builders for layers with weights, BatchNorm folded from the graph
==================  ===========================================================================
"""
