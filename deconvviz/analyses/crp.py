"""Concept relevance propagation (Achtibat et al., Nature Machine Intelligence 2023).

A *concept* is a channel of a layer. Its conditional heatmap for a decision is the class's
LRP relevance at the layer, masked to that channel and propagated on to the pixels; its
share is the channel's relevance, summed over positions, over the sum of every channel's
absolute relevance (zennit-crp's convention). :func:`layer_relevance` is the part of the
pass above the layer, run once for a batch of images; :func:`crp` then runs the part below
it for every concept at once (K signals per image, in chunks that fit ``max_memory``),
reusing the denominators of the LRP rules, which depend on the image only.

Relevance that bypasses the layer (a skip connection around it) is not any concept's: the
conditional heatmaps of all of a layer's channels add up to the class's heatmap exactly
where every path from the output to the pixels passes the layer (a block's output,
VGG16's conv5_3), and to the part that flows through it otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .. import figures
from .._io import write_atomically
from .._signatures import api
from ..data.images import ImagesArg
from ..engine import Projector
from ..engine.guard import runs_model
from ..engine.passes.recording import check_images, images_for
from ..engine.passes.reverse import FullSize, run
from ..errors import ArgumentError
from ..results import Result
from .attribution import resolve_target

__all__ = ["crp", "ConceptRelevance", "LayerRelevance", "layer_relevance", "layer_relevances"]


@dataclass
class LayerRelevance(Result):
    """A class's relevance at a layer, for a batch of images: ``figure()`` draws each
    channel's share, ``to_dict()``/``to_csv()`` list it per image and channel, ``save``
    writes ``.csv`` or ``.pt`` (every field).

    Attributes:
        relevance: ``[N, C, h, w]`` (``[N, C]`` for a linear layer).
        channel: ``[N, C]``: each channel's relevance summed over positions.
        share: ``[N, C]``: ``channel`` over the sum of the absolute values of ``channel``.
        classes: the class explained for each image; logits: their logits (the seeds).
        layer, method: where and how it was computed.
        named_relevance: for a ViT's token layer, the relevance of its named tokens
            ``[N, P, C]`` (the class token...), which ``relevance`` on the patch grid leaves
            out and ``channel`` counts; else ``None``.
    """

    relevance: Tensor
    channel: Tensor
    share: Tensor
    classes: List[int]
    logits: Tensor
    layer: Optional[str] = None
    method: Optional[str] = None
    named_relevance: Optional[Tensor] = None
    kind: ClassVar[str] = "layer_relevance"

    def figure(self, *, fig=None):
        """Each image's relevance share per channel, a bar per channel."""
        return figures.channel_relevance(
            self.channel.detach().cpu().numpy(), self.share.detach().cpu().numpy(),
            [f"image {n}: class {c}" for n, c in enumerate(self.classes)],
            title=f"relevance at {self.layer or 'the layer'} per channel ({self.method})",
            fig=fig)

    def _table(self) -> Dict[str, list]:
        """One row per image and channel: image, class, channel, relevance, share."""
        return _rows(self.classes, list(range(self.channel.shape[1])), self.channel,
                     self.share, "channel")

    def _save_data(self, path: str, ext: str) -> str:
        return super()._save_data(path, ext) if ext == ".csv" else _save_fields(self, path)


@dataclass
class ConceptRelevance(Result):
    """:func:`crp`'s result: ``figure()`` draws the concepts' heatmaps (a row per image),
    ``to_dict()``/``to_csv()`` list each concept's relevance and share per image, ``save``
    writes ``.csv`` or ``.pt`` (every field).

    Attributes:
        heatmaps: ``[N, K, 3, H, W]``: each concept's conditional heatmap (sum over the
            colour channels for one map per pixel).
        concepts: the K channels, in the order of ``heatmaps``.
        relevance: ``[N, K]``: each concept's relevance at the layer (summed over positions).
        share: ``[N, K]``: its share of the layer's relevance.
        layer, method, classes: what was explained, and how.
    """

    heatmaps: Tensor
    concepts: List[int]
    relevance: Tensor
    share: Tensor
    layer: str
    method: str
    classes: List[int]
    kind: ClassVar[str] = "concept_relevance"

    def figure(self, *, fig=None):
        """One row per image, one conditional heatmap per concept (red positive, blue
        negative relevance), titled with the concept's channel and share."""
        maps = self.heatmaps.detach().sum(2).cpu().numpy()
        return figures.concept_heatmaps(
            maps, self.concepts, self.share.tolist(),
            [f"class {c}" for c in self.classes],
            title=f"CRP: the concepts of {self.layer} ({self.method})", fig=fig)

    def _table(self) -> Dict[str, list]:
        """One row per image and concept: image, class, concept, relevance, share."""
        return _rows(self.classes, self.concepts, self.relevance, self.share, "concept")

    def _save_data(self, path: str, ext: str) -> str:
        return super()._save_data(path, ext) if ext == ".csv" else _save_fields(self, path)


def _rows(classes: List[int], channels: List[int], relevance: Tensor, share: Tensor,
          name: str) -> Dict[str, list]:
    pairs = [(n, k) for n in range(len(classes)) for k in range(len(channels))]
    return {"image": [n for n, _ in pairs], "class": [classes[n] for n, _ in pairs],
            name: [channels[k] for _, k in pairs],
            "relevance": [float(relevance[n, k]) for n, k in pairs],
            "share": [float(share[n, k]) for n, k in pairs]}


def _save_fields(result: Result, path: str) -> str:
    """Every field to a ``.pt`` file (tensors on the CPU; ``torch.load(weights_only=True)``
    reads it)."""
    values = {f.name: getattr(result, f.name) for f in fields(result)}
    data = {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in values.items()}
    return write_atomically(path, lambda f: torch.save(data, f))


def _relevance_net(model: Union[nn.Module, Projector], method: Optional[str]) -> Projector:
    """A projector of an LRP method: ``method``, else a projector's own, else ``lrp``."""
    if isinstance(model, Projector):
        net = model if method is None or model.method.name == method \
            else model.with_method(method)
    else:
        net = Projector(model, method=method or "lrp")
    if not net.method.relevance:
        raise ArgumentError(f"CRP needs an LRP method (lrp, lrp_epsilon_gamma_box, ...), "
                            f"not {method!r}")
    return net


@api(renamed={"x": "images"}, legacy=("layer", "target"))
@runs_model
def layer_relevance(model: Union[nn.Module, Projector], images: ImagesArg, *, layer: str,
                    target: Union[None, int, str, Sequence[int]] = None,
                    method: Optional[str] = None, device: Optional[str] = None,
                    precision: Optional[str] = None) -> LayerRelevance:
    """The relevance of each image's class (default: its top-1) at ``layer``, seeded with the
    logit: one forward pass and the part of the LRP pass above the layer, for the batch.

    Args:
        model: the network, or a :class:`~deconvviz.engine.Projector` of it.
        images: photos in any form of the glossary (docs/api.md).
        layer: the layer (alias or module path).
        target: the class (index or name; default: each image's top-1), or one per image.
        method: an LRP method (default: a projector's own, else ``lrp``).
        device: where to compute (default: where the model is).
        precision: ``"exact"`` (default) or ``"tf32"``.
    """
    x, _, _ = images_for(_model_of(model), images)
    return layer_relevances(model, x, [layer], target, method=method)[layer]


def _model_of(model: Union[nn.Module, Projector]) -> nn.Module:
    return model.model if isinstance(model, Projector) else model


def layer_relevances(model: Union[nn.Module, Projector], x: Tensor, layers: Sequence[str],
                     target: Union[None, int, str, Sequence[int]] = None, *,
                     method: Optional[str] = None, recording=None) -> Dict[str, LayerRelevance]:
    """:func:`layer_relevance` at several layers with one forward pass and one LRP pass
    down to the shallowest of them."""
    net = _relevance_net(model, method)
    x = check_images(x, net.device, model=net.model)
    layers = list(layers)
    rec = recording if recording is not None else net.record(x, [*layers, ""])
    logits = rec.activations[""]
    if target is not None and not isinstance(target, (int, str)):
        classes = [int(c) for c in target]
        if len(classes) != x.shape[0]:
            raise ArgumentError(f"give one class per image ({x.shape[0]}), got {len(classes)}")
    else:
        classes = resolve_target(net.model, x, target, logits=logits).classes
    rows = torch.arange(x.shape[0], device=logits.device)
    cls = torch.as_tensor(classes, device=logits.device)
    seed = torch.zeros_like(logits)
    seed[rows, cls] = logits[rows, cls]
    full = net.reverse_pass("")
    ops = full.ops
    where = {op.name: i for i, op in enumerate(ops)}
    stops = []
    for layer in layers:
        node = net._node(layer)
        if node not in where:
            raise ArgumentError(f"layer {layer!r} is not on the path from the output to the "
                                f"input")
        stops.append((where[node], layer, node))
    ctx = FullSize(net.method, rec, x.shape[0], 1, net.traced, full.folded)
    signals, done, found = {net._node(""): seed}, 0, {}
    with torch.no_grad():
        for index, layer, node in sorted(stops):
            # the signals left at ``node`` once every op above it has run: all of its relevance
            signals = run(ops[done:index], signals, ctx)
            done = index
            found[layer] = signals.get(node)
    out = {}
    for layer in layers:  # the output's activations are recorded once, as ""
        act = rec.activations[layer if layer in rec.activations else ""]
        relevance, named = _channels_first(net, found[layer], act, net._node(layer), rec)
        channel = relevance.flatten(2).sum(-1) if relevance.dim() > 2 else relevance
        if named is not None:  # a ViT's class token holds relevance too
            channel = channel + named.sum(1)
        share = channel / channel.abs().sum(1, keepdim=True).clamp_min(1e-30)
        out[layer] = LayerRelevance(relevance, channel, share, list(classes), logits[rows, cls],
                                    layer, net.method.name, named_relevance=named)
    return out


def _channels_first(net: Projector, relevance: Optional[Tensor], act: Tensor, node: str, rec):
    """The relevance at ``node`` as its activation is read (channels first; a ViT's tokens on
    the patch grid), and that of its named tokens ``[N, P, C]`` (``None`` for other layers)."""
    if relevance is None:
        return torch.zeros_like(act), None
    reading = net._reading(node, rec) if relevance.shape != act.shape else None
    if reading is None:
        return relevance.reshape(act.shape), None
    named = reading.named(relevance) if hasattr(reading, "named") else None
    return reading.features(relevance).reshape(act.shape), named


@api(renamed={"x": "images", "concepts": "features"}, legacy=("layer", "features", "target"))
@runs_model
def crp(model: Union[nn.Module, Projector], images: ImagesArg, *, layer: str,
        features: Union[None, int, Sequence[int]] = None,
        target: Union[None, int, str, Sequence[int]] = None, top: Optional[int] = None,
        method: Optional[str] = None, device: Optional[str] = None,
        precision: Optional[str] = None) -> ConceptRelevance:
    """Concept-conditional heatmaps: for each concept (channel of ``layer``), the class's
    relevance through that channel alone, at the pixels.

    Args:
        model: the network, or a :class:`~deconvviz.engine.Projector` of it.
        images: photos in any form of the glossary (docs/api.md).
        layer: the concepts' layer (alias or module path).
        features: the concepts: channel indices of ``layer`` (default: every channel, or the
            ``top`` most relevant).
        target: the class (index or ImageNet name; default: each image's top-1), or one
            class per image.
        top: the ``top`` most relevant channels (by their share summed over the images),
            most relevant first.
        method: an LRP method (default: a projector's own, else ``lrp``, zennit's
            EpsilonPlusFlat).
        device: where to compute (default: where the model is).
        precision: ``"exact"`` (default) or ``"tf32"``.

    Returns:
        A :class:`ConceptRelevance`.

    Examples:
        >>> r = crp(model, "photo.jpg", layer="conv5_3", top=6)
        >>> r.heatmaps.shape, r.share   # [1, 6, 3, H, W], each concept's share
    """
    net = _relevance_net(model, method)
    x, _, _ = images_for(net.model, images)
    if net._node(layer) == net._node(""):
        raise ArgumentError(f"{layer!r} is the model's output: its only concept relevant to "
                            f"a class is that class itself; CRP's concepts are the channels "
                            f"of a layer below it (`deconvviz layers` lists them)")
    rec = net.record(x, [layer, ""])
    upper = layer_relevances(net, x, [layer], target, method=net.method.name,
                             recording=rec)[layer]
    channels = upper.relevance.shape[1]
    if features is None:
        order = upper.share.sum(0).argsort(descending=True).tolist()
        chosen = order[:top] if top is not None else list(range(channels))
    else:
        chosen = [int(features)] if isinstance(features, int) else [int(c) for c in features]
        bad = [c for c in chosen if not 0 <= c < channels]
        if bad or not chosen:
            raise ArgumentError(f"concepts are channels 0..{channels - 1} of {layer!r}, got "
                                f"{bad or chosen}")
    steps = net.reverse_pass(layer)
    node = net._node(layer)
    relevance = upper.relevance
    index = torch.as_tensor(chosen, device=relevance.device)

    named = upper.named_relevance

    def masked(k0: int, k1: int):
        part = index[k0:k1]
        seeds = relevance.new_zeros(relevance.shape[0], len(part), *relevance.shape[1:])
        ks = torch.arange(len(part), device=relevance.device)
        seeds[:, ks, part] = relevance[:, part]
        if named is None:
            return seeds
        tokens = named.new_zeros(named.shape[0], len(part), *named.shape[1:])
        tokens[:, ks, :, part] = named[:, :, part].permute(2, 0, 1)  # [K, N, P] -> seeds
        return seeds, tokens

    heatmaps = net._reverse_in_chunks(steps, rec, node, masked, len(chosen), x.shape[0])
    return ConceptRelevance(heatmaps, chosen, upper.channel[:, index], upper.share[:, index],
                            layer, net.method.name, upper.classes)
