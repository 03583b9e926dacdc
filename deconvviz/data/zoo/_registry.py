"""The model registry: names, builders, layer aliases and where the weights come from."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ...errors import UnknownModelError, closest

__all__ = ["ModelSpec", "register_model", "list_models", "get_spec", "torchvision_builder",
           "register_source"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything deconvviz knows about one zoo model.

    Attributes:
        name: the zoo name (``"vgg16"``).
        build: ``build(weights, num_classes=1000) -> nn.Module``; ``weights`` is a
            torchvision ``WeightsEnum`` member or ``None`` for random initialisation, and
            ``num_classes`` the classifier's width (another than 1000 only with random
            weights, e.g. for training on another dataset). Builders import torch when
            called, so that listing the zoo (``deconvviz --help``) stays instant.
        aliases: short layer names in the vocabulary of the model's paper, mapped to dotted
            module paths, in network order.
        imagenet_weights: the name of the torchvision weights behind ``weights="default"``
            (``"VGG16_Weights.DEFAULT"``), or ``None`` when no public ImageNet weights exist
            (ZFNet); :meth:`weights_enum` gives the enum member.
        paper: a one-line reference.
    """

    name: str
    build: Callable[..., object]
    aliases: Dict[str, str]
    imagenet_weights: Optional[str] = None
    paper: str = ""
    extra: Dict[str, object] = field(default_factory=dict)

    def weights_enum(self):
        """The torchvision ``WeightsEnum`` member behind ``weights="default"`` (``None`` for
        models without public weights). Imports torchvision."""
        if self.imagenet_weights is None:
            return None
        from torchvision.models import get_weight

        return get_weight(self.imagenet_weights)


def torchvision_builder(name: str) -> Callable[..., object]:
    """A builder for torchvision's model ``name`` that imports torchvision only when called."""

    def build(weights=None, num_classes: int = 1000):
        from torchvision import models

        extra = {} if num_classes == 1000 else {"num_classes": num_classes}
        return getattr(models, name)(weights=weights, **extra)

    build.__name__ = name
    return build


_REGISTRY: Dict[str, ModelSpec] = {}
# prefix -> resolve(name) -> ModelSpec: models of a library by name ("torchvision:NAME")
_SOURCES: Dict[str, Callable[[str], ModelSpec]] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the zoo; a name can be registered only once."""
    if spec.name in _REGISTRY:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def register_source(prefix: str, resolve: Callable[[str], ModelSpec]) -> None:
    """Let ``PREFIX:NAME`` name a model of a library: ``resolve(NAME)`` gives its spec or
    raises :class:`UnknownModelError` naming the valid choices."""
    if prefix in _SOURCES:
        raise ValueError(f"a model source named {prefix!r} is already registered")
    _SOURCES[prefix] = resolve


def list_models(pattern: Optional[str] = None) -> List[str]:
    """The zoo's model names, in registration order, optionally filtered by an fnmatch pattern.
    (Models of other libraries, ``torchvision:NAME``, are not listed.)

    Examples:
        >>> list_models("resnet*")[:2]
        ['resnet18', 'resnet34']
    """
    names = list(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a zoo model (names are case-insensitive: ``"VGG16"`` is
    ``"vgg16"``), or of a library's model named ``torchvision:NAME`` (any torchvision
    classification model) or ``timm:NAME``; an unknown name raises
    :class:`UnknownModelError`."""
    spec = _REGISTRY.get(name.lower()) if isinstance(name, str) else None
    if spec is None and isinstance(name, str) and ":" in name:
        prefix, _, rest = name.partition(":")
        if prefix.lower() in _SOURCES:
            return _SOURCES[prefix.lower()](rest.strip().lower())  # their names: lower case
        raise UnknownModelError(
            f"unknown model source {prefix!r} in {name!r}. Valid sources: "
            f"{', '.join(f'{p}:NAME' for p in _SOURCES)}; or a zoo model: "
            f"{', '.join(_REGISTRY)}.")
    if spec is None:
        raise UnknownModelError(
            f"unknown model {name!r}.{closest(str(name).lower(), _REGISTRY)} "
            f"Valid models: {', '.join(_REGISTRY)}, or torchvision:NAME for any torchvision "
            f"classification model.")
    return spec
