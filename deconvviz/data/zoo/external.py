"""Models beyond the zoo, by library and name: ``torchvision:NAME`` and ``timm:NAME``.

Any torchvision classification model (``torchvision:efficientnet_b0``) is a model spec built
on first use, with torchvision's weights API behind ``weights="default"`` (offline as the
zoo's: the torch hub cache holds the file, or a clear error); timm's models (``timm:NAME``)
likewise when timm is installed, their default weights being timm's pretrained ones. They
have no layer aliases: their layers are their module paths (``deconvviz layers``).

Nothing here imports torch, torchvision or timm until a name with a prefix is resolved.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, List

from ...errors import UnknownModelError, closest
from ._registry import ModelSpec, register_source

__all__ = ["torchvision_models", "torchvision_spec", "timm_spec"]


@lru_cache(maxsize=None)
def torchvision_models() -> List[str]:
    """torchvision's classification models (``torchvision.models.list_models``)."""
    from torchvision import models

    return list(models.list_models(module=models))


def _unknown(prefix: str, name: str, choices: List[str]) -> UnknownModelError:
    return UnknownModelError(
        f"unknown {prefix} model {name!r}.{closest(name, choices)} Valid {prefix} "
        f"classification models: {', '.join(choices)}.")


@lru_cache(maxsize=None)
def torchvision_spec(name: str) -> ModelSpec:
    """The spec of torchvision's classification model ``name``."""
    choices = torchvision_models()
    if name not in choices:
        raise _unknown("torchvision", name, choices)
    from torchvision.models import get_model_weights

    weights = get_model_weights(name)

    def build(weights=None, num_classes: int = 1000):
        from torchvision import models

        extra = {} if num_classes == 1000 else {"num_classes": num_classes}
        return models.get_model(name, weights=weights, **extra)

    return ModelSpec(name=f"torchvision:{name}", build=build, aliases={},
                     imagenet_weights=f"{weights.__name__}.DEFAULT",
                     paper=f"torchvision's {name} (torchvision.models.{name})")


@lru_cache(maxsize=None)
def timm_spec(name: str) -> ModelSpec:
    """The spec of timm's model ``name`` (timm must be installed)."""
    try:
        import timm
    except ImportError:
        raise UnknownModelError(
            f"timm:{name} needs timm, which is not installed (pip install timm); use a zoo "
            f"model or torchvision:NAME") from None
    choices = list(timm.list_models())
    if name not in choices:
        raise UnknownModelError(
            f"unknown timm model {name!r}.{closest(name, choices)} List timm's models with "
            f"timm.list_models() ({len(choices)} of them).")

    def build(weights=None, num_classes: int = 1000):
        return timm.create_model(name, pretrained=weights is not None,
                                 num_classes=num_classes)

    return ModelSpec(name=f"timm:{name}", build=build, aliases={}, imagenet_weights=None,
                     paper=f"timm's {name}", extra={"pretrained": "timm"})


SOURCES: "dict[str, Callable[[str], ModelSpec]]" = {
    "torchvision": torchvision_spec,
    "timm": timm_spec,
}
for _prefix, _resolve in SOURCES.items():
    register_source(_prefix, _resolve)
