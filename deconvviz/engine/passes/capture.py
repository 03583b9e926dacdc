"""Capturing a forward that ``torch.fx`` cannot trace symbolically, with ``torch.export``.

``torch.fx`` traces with proxies, so a forward that needs concrete values fails:
``torch.cat(list(reversed(x.chunk(2, dim=1))), dim=1)`` (``len`` of a proxy), or Python control
flow on sizes. ``torch.export`` (non-strict) runs the forward on fake tensors and handles
these, but returns a graph of ATen ops. This module turns that graph back into the graph
:mod:`deconvviz.engine.passes.graph` classifies, so that the same rules apply:

- every call of a leaf module (``Conv2d``, ``ReLU``, ``MaxPool2d``, ... the modules fx keeps as
  leaves) whose ATen ops take one input and give one output becomes one ``call_module`` node
  of the user's own module again;
- an ATen op in the user's forward whose torch function a rule claims (``aten.relu`` for
  ``torch.relu``, ``aten.gt`` for ``torch.gt``, ``aten.view`` for ``torch.reshape``) calls that
  function; any other ATen op stays as it is and takes the methods' exact fallback;
- an ATen op left inside a module or function whose reverse differs between methods (a ReLU,
  an activation, local response normalisation), where it could not be folded back, is marked
  refused: the deconvnet's rule would silently turn into the gradient there.

Sizes are kept symbolic (``Dim.AUTO``); the guards torch.export records (a branch on a size)
stay in the graph and refuse an input that breaks them. The user's model is not changed: the
graph calls its modules and reads its parameters.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import traceback
from typing import Dict, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ...data.devices import model_device, model_dtype
from ..catalogue.rules import get_rule, lookup_tables

__all__ = ["export_graph", "user_frame"]

REFUSED = "deconvviz_refused"  # node.meta key: why no rule may take this node (graph.REFUSED)
_TORCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__))),
                          "torch") + os.sep
# ATen ops whose torch function has another name.
_RENAMED = {"view": torch.reshape, "_unsafe_view": torch.reshape, "_reshape_alias": torch.reshape}
# Kinds whose reverse is each method's own: an op of theirs must never take the fallback.
_METHOD_SPECIFIC = ("relu", "relu6", "activation", "pointwise", "lrn")


def user_frame(tb) -> str:
    """``file.py:23`` of the innermost frame of a traceback outside torch, or ``""``."""
    found = ""
    for frame in traceback.extract_tb(tb):
        path = os.path.abspath(frame.filename)
        if not path.startswith(_TORCH_DIR) and "/deconvviz/engine/" not in path:
            found = f"{os.path.basename(path)}:{frame.lineno}"
    return found


def _example_sizes(model: nn.Module) -> List[int]:
    from ...data.zoo import model_info

    info = model_info(model)
    return [int(info.preprocessing.crop_size)] if info is not None else [224, 64, 32]


def _channels(model: nn.Module) -> int:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def _export(model: nn.Module):
    """``ExportedProgram`` of the model at a symbolic batch and image size."""
    from torch.export import Dim, export

    dtype = model_dtype(model)
    kwargs = dict(device=model_device(model), dtype=dtype) if dtype is not None else {}
    error: Optional[BaseException] = None
    with _quiet_torch_logs():
        for size in _example_sizes(model):
            x = torch.zeros(2, _channels(model), size, size, **kwargs)
            try:
                with torch.no_grad():
                    return export(model, (x,), strict=False,
                                  dynamic_shapes=({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO},))
            except Exception as exc:  # export raises many kinds; all mean "cannot capture"
                error = exc
    assert error is not None
    raise error


@contextlib.contextmanager
def _quiet_torch_logs():
    """torch.export logs its guards and graphs at warning level where it fails; deconvviz
    says what went wrong in its own error, in one line."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("torch")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with contextlib.redirect_stderr(io.StringIO()):  # it prints its partial graph there
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _is_leaf(module: nn.Module) -> bool:
    if type(module) in lookup_tables()[0]:
        return True
    return module.__module__.startswith("torch.nn") and not isinstance(
        module, (nn.Sequential, nn.ModuleList, nn.ModuleDict))


def _stack(node: fx.Node) -> List[Tuple[str, str]]:
    """``[(call key, module path), ...]`` from the root down."""
    return [(key, value[0]) for key, value in (node.meta.get("nn_module_stack") or {}).items()]


def _torch_function(target):
    """The torch function a rule claims for an ATen op, or ``None``."""
    packet = getattr(target, "overloadpacket", None)
    if packet is None:
        return None
    name = packet.__name__
    _, functions, _ = lookup_tables()
    from ..catalogue.rules import _GUARDED  # the rules that share a target

    claimed = set(functions) | {t for (kind, t) in _GUARDED if kind == "function"}
    for candidate in (_RENAMED.get(name), getattr(F, name, None), getattr(torch, name, None)):
        if candidate is not None and candidate in claimed:
            return candidate
    return None


def _method_specific_functions() -> Dict[str, str]:
    """``F`` function name -> rule kind, for the functions whose reverse is each method's."""
    out = {}
    for kind in _METHOD_SPECIFIC:
        rule = get_rule(kind)
        for f in rule.functions if rule is not None else ():
            out[getattr(f, "__name__", "")] = kind
    return out


def export_graph(model: nn.Module) -> Tuple[fx.GraphModule, Dict[str, List[fx.Node]]]:
    """Capture ``model`` with ``torch.export`` as a graph of its own modules and torch
    functions (see the module docstring).

    Returns:
        ``(graph module, module path -> the node(s) its calls returned)``.

    Raises:
        Exception: whatever torch.export raises when it cannot capture the forward.
    """
    exported = _export(model).module()
    nodes = list(exported.graph.nodes)
    modules = dict(model.named_modules())
    leaf_of = _leaf_calls(nodes, modules)
    folded, skip = _foldable(nodes, leaf_of)
    graph_module = _rebuilt(model, exported, nodes, modules, leaf_of, folded, skip)
    return graph_module, _module_outputs(graph_module.graph)


def _leaf_calls(nodes, modules) -> Dict[fx.Node, Tuple[str, str]]:
    """Each ATen node run inside a call of a leaf module -> (that call's key, module path)."""
    leaf_of: Dict[fx.Node, Tuple[str, str]] = {}
    for node in nodes:
        if node.op != "call_function":
            continue
        for key, path in _stack(node):
            module = modules.get(path)
            if path and module is not None and _is_leaf(module):
                leaf_of[node] = (key, path)
                break
    return leaf_of


def _foldable(nodes, leaf_of):
    """The calls of leaf modules that take one input and give one output, each folded back
    into one call: ``(first node -> (path, input, output), every node of a folded call)``."""
    groups: List[List[fx.Node]] = []
    for node in nodes:
        if node in leaf_of and groups and leaf_of.get(groups[-1][-1]) == leaf_of[node]:
            groups[-1].append(node)
        elif node in leaf_of:
            groups.append([node])
    folded: Dict[fx.Node, Tuple[str, fx.Node, fx.Node]] = {}
    skip = set()
    for group in groups:
        members = set(group)
        path = leaf_of[group[0]][1]
        inputs = list(dict.fromkeys(
            a for n in group for a in n.all_input_nodes
            if a not in members and not (a.op == "get_attr"
                                         and str(a.target).startswith(path + "."))))
        outputs = [n for n in group if any(u not in members for u in n.users)]
        if len(inputs) == 1 and len(outputs) == 1:
            folded[group[0]] = (path, inputs[0], outputs[0])
            skip.update(group)
    return folded, skip


def _rebuilt(model, exported, nodes, modules, leaf_of, folded, skip) -> fx.GraphModule:
    """A new graph: the folded calls as calls of the user's modules, torch functions where a
    rule claims the ATen op, the rest as exported (refused where a method's rule is lost)."""
    graph = fx.Graph()
    env: Dict[fx.Node, fx.Node] = {}
    root: Dict[str, object] = {}
    specific = _method_specific_functions()
    for node in nodes:
        if node in folded:
            path, source, out = folded[node]
            new = graph.call_module(path, (env[source],))
            new.meta = dict(out.meta)
            root[path] = modules[path]
            env[out] = new
            continue
        if node in skip:
            continue
        new = graph.node_copy(node, lambda n: env[n])
        if node.op == "get_attr":
            root[str(node.target)] = _attribute(model, exported, str(node.target))
        elif node.op == "call_module":
            root[str(node.target)] = exported.get_submodule(str(node.target))
        elif node.op == "call_function":
            function = _torch_function(node.target)
            if function is not None:
                new.target = function
            why = _refused(node, leaf_of, modules, specific, function)
            if why:
                new.meta[REFUSED] = why
        env[node] = new
    return fx.GraphModule(root, graph, class_name=type(model).__name__)


def _module_outputs(graph: fx.Graph) -> Dict[str, List[fx.Node]]:
    """The output of each module call (leaves and containers), by ``nn_module_stack``."""
    members: Dict[Tuple[str, str], List[fx.Node]] = {}
    for node in graph.nodes:
        for key, path in _stack(node):
            if path:
                members.setdefault((key, path), []).append(node)
    outputs: Dict[str, List[fx.Node]] = {}
    for (_, path), inside in members.items():
        inside_set = set(inside)
        leaving = [n for n in inside if n.op != "output"
                   and any(u not in inside_set for u in n.users)]
        if len(leaving) == 1 and leaving[0] not in outputs.get(path, []):
            outputs.setdefault(path, []).append(leaving[0])
    return outputs


def _attribute(model: nn.Module, exported: nn.Module, target: str):
    for owner in (model, exported):
        obj = owner
        try:
            for part in target.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise AttributeError(target)


def _refused(node: fx.Node, leaf_of, modules, specific, function) -> str:
    """Why an ATen op must not take the methods' fallback, or ``""``."""
    kind = None
    if node in leaf_of:  # inside a module that could not be folded back into one call
        module = modules[leaf_of[node][1]]
        rule = lookup_tables()[0].get(type(module))
        if rule is not None and rule.kind in _METHOD_SPECIFIC:
            kind = f"{type(module).__name__} (its ATen ops could not be folded into one call)"
    if kind is None:  # a functional call decomposed into several ATen ops
        for name in re.findall(r"torch/nn/functional\.py\", line \d+, in (\w+)",
                               node.meta.get("stack_trace") or ""):
            if name in specific and getattr(function, "__name__", None) != name:
                kind = f"F.{name} (decomposed into ATen ops)"
    if kind is None:
        return ""
    return (f"part of {kind}, whose reverse differs between methods; torch.export captured "
            f"it as {node.target}, and no rule can tell it from the gradient")
