"""The model registry: names, builders, layer aliases and where the weights come from."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from torch import nn

from ..errors import UnknownModelError, closest

__all__ = ["ModelSpec", "register_model", "list_models", "get_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything deconvviz knows about one zoo model.

    Attributes:
        name: the zoo name (``"vgg16"``).
        build: ``build(weights) -> nn.Module``; ``weights`` is a torchvision ``WeightsEnum``
            member or ``None`` for random initialisation.
        aliases: short layer names in the vocabulary of the model's paper, mapped to dotted
            module paths, in network order.
        imagenet_weights: the torchvision weights behind ``weights="default"``, or ``None``
            when no public ImageNet weights exist (ZFNet).
        paper: a one-line reference.
    """

    name: str
    build: Callable[..., nn.Module]
    aliases: Dict[str, str]
    imagenet_weights: Optional[object] = None
    paper: str = ""
    extra: Dict[str, object] = field(default_factory=dict)


_REGISTRY: Dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the zoo; a name can be registered only once."""
    if spec.name in _REGISTRY:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(pattern: Optional[str] = None) -> List[str]:
    """The zoo's model names, in registration order, optionally filtered by an fnmatch pattern.

    Examples:
        >>> list_models("resnet*")[:2]
        ['resnet18', 'resnet34']
    """
    names = list(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a zoo model; an unknown name raises :class:`UnknownModelError`."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownModelError(
            f"unknown model {name!r}.{closest(str(name), _REGISTRY)} "
            f"Valid models: {', '.join(_REGISTRY)}."
        ) from None
