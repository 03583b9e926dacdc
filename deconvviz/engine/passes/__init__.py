"""The passes that walk a traced graph, each asking the catalogue
(:mod:`deconvviz.engine.catalogue`) for the rule of every op.

==================  ===========================================================================
module              job
==================  ===========================================================================
``graph``           trace a model with torch.fx; classify every node by the rule that claims it
``capture``         a forward fx cannot trace, captured by torch.export, as fx's graph again
``layout``          channels-last maps (ConvNeXt's permutes) and the ops acting per position
``layers``          layer names, aliases, shapes and receptive fields
``recording``       one forward pass: activations, switches, inputs a method reads
``rerecord``        forward passes again from a recording, only below a changed layer
``seeds``           features to signals: the strongest activation, or the whole map
``reverse``         the one reverse loop, and its full-size context
``cone``            the receptive-field cone: windows, and its context for the reverse loop
``cone_plan``       choosing and running the cone or the full-size pass for a projector
``plan``            the fastest exact plan per layer and device: the cone or the full pass
``windows``         forward windows' spans and the copies that cut them out of stored maps
``incremental``     the incremental forward: only the window a changed patch can reach
==================  ===========================================================================
"""
