"""Recording a forward pass again after some layers changed, reusing everything they cannot
have changed.

:class:`Rerecorder` records one image batch through a model whose layers change between
recordings (the sanity check's cascading randomisation re-initialises one layer per step).
The first recording runs the whole graph and keeps a copy of every node's value. Each later
recording is told which modules changed since the one before: only the graph nodes that call
them, and every node that depends on those, run again; every other node keeps its value, and
what the reverse passes read of it (switches, inputs, arguments, and the per-layer terms LRP
caches in :attr:`Recording.cache`) is taken over from the recording before. The nodes that
run again get bit-identical inputs, so the recording equals a plain one.

In-place ops are why values are copied as they are computed: a node's copy is its value
right after it ran. That is what every later reader sees, unless an in-place op changes the
tensor between the node and one of its readers. The first recording checks this (each
tensor's version counter when a reader runs against its version right after its node ran);
where it fails, every recording runs the whole graph (:attr:`Rerecorder.reuses` is False).
The copies cost memory: 110 MB per 224x224 image for VGG16, 188 MB for DenseNet-121.
"""
from __future__ import annotations

from typing import Collection, Dict, List, Mapping, Optional, Set, Tuple

import torch
import torch.fx as fx
from torch import Tensor

from .graph import TracedModel
from .recording import Recording, _Recorder, _Stop, features_first, read_features

__all__ = ["Rerecorder"]


def _copy(value):
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_copy(v) for v in value)
    return value


def _versions(value):
    if isinstance(value, Tensor):
        return value._version
    if isinstance(value, (tuple, list)):
        return tuple(_versions(v) for v in value)
    return None


class _Lazy:
    """A value not computed in this run: read from the copies only if a node that runs needs
    it."""


class _Rerun(_Recorder):
    def __init__(self, owner: "Rerecorder", changed: Optional[Set[str]]):
        super().__init__(owner.traced, owner.keep, owner.switches, owner.inputs,
                         owner.arguments)
        self.owner, self.changed = owner, changed  # None: run every node
        self.raw: Dict[str, object] = {}  # kept activations as computed

    def run_node(self, n: fx.Node):
        owner, prior = self.owner, self.owner.last
        if self.changed is not None and n.name not in self.changed and n.op in (
                "call_module", "call_function", "call_method"):
            return self._taken_over(n, prior)
        for arg in n.all_input_nodes:
            if isinstance(self.env.get(arg), _Lazy):
                self.env[arg] = _copy(owner.values[arg.name])
            elif self.changed is None and arg.name in owner.versions:
                if _versions(self.env[arg]) != owner.versions[arg.name]:
                    owner.reuses = False  # an in-place op changed it before this reader
        try:
            out = super().run_node(n)
        except _Stop:  # the last kept node: its value is the activation just kept
            self._keep_copy(n, self.recording.activations[self.keep[n.name]])
            raise
        self._keep_copy(n, out)
        return out

    def _keep_copy(self, n: fx.Node, value) -> None:
        if n.op == "output":
            return
        self.owner.values[n.name] = _copy(value)
        self.owner.versions[n.name] = _versions(value)
        if n.name in self.keep:
            self.raw[n.name] = self.recording.activations[self.keep[n.name]]

    def _taken_over(self, n: fx.Node, prior: Recording):
        rec, name = self.recording, n.name
        op = self.ops[name]
        if name in prior.shapes:
            rec.shapes[name] = prior.shapes[name]
        if name in self.inputs:
            rec.inputs[name] = prior.inputs[name]
        if name in self.arguments:
            rec.arguments[name] = prior.arguments[name]
        if op.kind == "maxpool" and self.switches:
            key = self._pool_key(op)
            rec.switches[key] = prior.switches[key]
            rec.switch_keys[name] = key
        if name in self.keep:
            rec.activations[self.keep[name]] = self.owner.raw[name]
            self.raw[name] = self.owner.raw[name]
            self.pending.discard(name)
            if not self.pending:
                raise _Stop
        return _Lazy()


class Rerecorder:
    """Record ``x`` through ``traced`` again and again while modules change (see the module
    docstring); each recording equals :func:`~deconvviz.engine.passes.recording.record_nodes`'s.

    Args:
        traced: the traced model.
        x: the images ``[N, C, H, W]``, the same for every recording.
        keep, switches, inputs, arguments: as :func:`record_nodes` takes them (a
            :meth:`Projector.recorded_state` says what a method's reverse pass reads).

    Examples:
        >>> again = Rerecorder(traced, x, {"output": ""}, switches=True)
        >>> rec = again.record()                         # every node runs
        >>> model.classifier[6].reset_parameters()
        >>> rec = again.record(["classifier.6"])         # only that layer and above run
    """

    def __init__(self, traced: TracedModel, x: Tensor, keep: Mapping[str, str], *,
                 switches: bool = True, inputs: Collection[str] = (),
                 arguments: Collection[str] = ()):
        self.traced, self.x, self.keep = traced, x, dict(keep)
        self.switches, self.inputs, self.arguments = switches, set(inputs), set(arguments)
        self.values: Dict[str, object] = {}  # node -> its value right after it ran
        self.versions: Dict[str, object] = {}
        self.raw: Dict[str, object] = {}
        self.last: Optional[Recording] = None
        self.reuses = True  # False once an in-place op was seen to change a value read later
        self.ran: List[str] = []  # the op nodes the last recording ran, in graph order

    def changed_nodes(self, modules: Collection[str]) -> Set[str]:
        """The graph nodes whose values can change when ``modules`` (paths) change: the
        nodes that call them or read their parameters, and every node that depends on
        those."""
        modules = set(modules)
        start = [n for n in self.traced.graph_module.graph.nodes
                 if n.op in ("call_module", "get_attr") and any(
                     n.target == m or n.target.startswith(m + ".") for m in modules)]
        changed, stack = set(), list(start)
        while stack:
            node = stack.pop()
            if node.name not in changed:
                changed.add(node.name)
                stack.extend(node.users)
        return changed

    def record(self, changed: Optional[Collection[str]] = None) -> Recording:
        """A recording of ``x`` with the modules as they are now; ``changed``: the module
        paths changed since the last recording (``None``: run every node)."""
        nodes = None
        if changed is not None and self.last is not None and self.reuses:
            nodes = self.changed_nodes(changed)
        run = _Rerun(self, nodes)
        run.recording.input_shape = self.x.shape
        with torch.no_grad():
            try:
                run.run(self.x)
            except _Stop:
                pass
        rec = run.recording
        if nodes is not None:  # unchanged values keep what a method computed from them
            rec.constants = {**self.last.constants, **rec.constants}
            stable = self._stable(nodes)
            rec.cache = {k: v for k, v in self.last.cache.items()
                         if isinstance(k, tuple) and k and k[-1] in stable}
        self.raw = run.raw
        self.ran = [n.name for n in self.traced.graph_module.graph.nodes
                    if n.op not in ("placeholder", "get_attr", "output")
                    and (nodes is None or n.name in nodes)]
        self.last = rec
        if self.keep:
            rec.activations = dict(rec.activations)
            read_features(rec, features_first(self.traced, self.keep, shapes=rec.shapes),
                          self.keep)
        return rec

    def _stable(self, changed: Set[str]) -> Set[str]:
        """Nodes that did not change and none of whose users did: a term cached for one of
        them may also read its neighbours (a BatchNorm folded into a convolution)."""
        return {n.name for n in self.traced.graph_module.graph.nodes
                if n.name not in changed and not any(u.name in changed for u in n.users)}

    def tail(self, nodes: Collection[str]) -> Tuple[fx.GraphModule, List[Tensor]]:
        """A ``GraphModule`` that runs the model from the current values of what ``nodes``
        and everything after them read (its arguments, in order), and those values (copies):
        ``tail(*values)`` returns what the model returns."""
        graph_nodes = list(self.traced.graph_module.graph.nodes)
        inside, stack = set(), [n for n in graph_nodes if n.name in set(nodes)]
        while stack:
            node = stack.pop()
            if node.name not in inside and node.op != "output":
                inside.add(node.name)
                stack.extend(node.users)
        frontier: List[fx.Node] = []
        for node in graph_nodes:
            if node.name in inside or node.op == "output":
                frontier += [a for a in node.all_input_nodes if a.name not in inside
                             and a.op != "get_attr" and a not in frontier]
        graph = fx.Graph()
        env = {a: graph.placeholder(a.name + "_value") for a in frontier}
        for node in graph_nodes:
            if node.name in inside or node.op in ("output", "get_attr"):
                env[node] = graph.node_copy(node, lambda n: env[n])
        values = [_copy(self.values[a.name]) for a in frontier]
        return fx.GraphModule(self.traced.graph_module, graph), values
