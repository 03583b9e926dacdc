"""Loading zoo models with their weights, and what deconvviz remembers about each one."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ...choices import (
    check_weights,
    weights_label,  # noqa: F401  (re-exported)
)
from ...errors import WeightsError, first_line
from ._registry import get_spec

__all__ = ["Preprocessing", "ModelInfo", "UntrainedWarning", "load_model", "model_info", "model_name",
           "count_parameters", "class_names", "checkpoint_payload", "checkpoint_model",
           "load_weights_into", "CHECKPOINT_FORMAT", "weights_digest", "weights_label", "cached_weights"]

# What deconvviz writes beside a state dict, so that a checkpoint says what it is.
CHECKPOINT_FORMAT = "deconvviz-checkpoint/1"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the model's input: resize the short side, centre-crop, normalise."""

    resize_size: int = 256
    crop_size: int = 224
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    def tensors(self, like):
        """``(mean, std)`` as ``[3, 1, 1]`` tensors of ``like``'s dtype and device."""
        import torch

        return tuple(torch.tensor(v, dtype=like.dtype, device=like.device).reshape(3, 1, 1)
                     for v in (self.mean, self.std))

    def normalise(self, pixels):
        """Pixels in [0, 1] (``[N, 3, H, W]`` or ``[3, H, W]``, float) -> the model's input:
        ``(pixels - mean) / std``. The one place deconvviz normalises."""
        mean, std = self.tensors(pixels)
        return (pixels - mean) / std

    def denormalise(self, x):
        """The model's input back to pixels in [0, 1] (not clamped): ``x * std + mean``."""
        mean, std = self.tensors(x)
        return x * std + mean

    @classmethod
    def from_weights(cls, weights: object) -> "Preprocessing":
        """Read the preprocessing off a torchvision weights enum's ``transforms()``."""
        t = weights.transforms()  # type: ignore[attr-defined]
        return cls(resize_size=int(t.resize_size[0]), crop_size=int(t.crop_size[0]),
                   mean=tuple(t.mean), std=tuple(t.std))

    def to_dict(self) -> dict:
        """Plain numbers and lists, as scan results and checkpoints store it."""
        return {"resize_size": self.resize_size, "crop_size": self.crop_size,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Preprocessing":
        """The inverse of :meth:`to_dict`."""
        return cls(resize_size=int(data["resize_size"]), crop_size=int(data["crop_size"]),
                   mean=tuple(data["mean"]), std=tuple(data["std"]))


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`load_model` knows about a model it returned.

    Attributes:
        name: zoo name.
        weights: ``"imagenet"``, ``"random"`` or the checkpoint path.
        trained: ``False`` for random initialisation (figures then say "untrained").
        preprocessing: how photos are turned into this model's input.
        classes: the output classes' names where a deconvviz checkpoint records them (a
            model trained on an image folder); ``None`` otherwise.
    """

    name: str
    weights: str
    trained: bool
    preprocessing: Preprocessing
    classes: Optional[Tuple[str, ...]] = None


class UntrainedWarning(UserWarning):
    """A model was asked for its default weights but none exist, so it is untrained."""


_INFO_ATTRIBUTE = "_deconvviz_info"  # on the model itself, as timm's pretrained_cfg is


def _attach(model: nn.Module, info: ModelInfo) -> None:
    """Record ``info`` on a model :func:`load_model` built (a plain attribute: not in its
    state dict; a deep copy keeps it)."""
    model.__dict__[_INFO_ATTRIBUTE] = info


def model_info(model: nn.Module) -> Optional[ModelInfo]:
    """The :class:`ModelInfo` of a model from :func:`load_model` (or a deep copy of one),
    ``None`` for other modules (a wrapper around a zoo model has its own module paths)."""
    return model.__dict__.get(_INFO_ATTRIBUTE)


def model_name(model: nn.Module) -> str:
    """The zoo name of a model from :func:`load_model`, else its class name."""
    info = model_info(model)
    return info.name if info is not None else type(model).__name__


def class_names(model: nn.Module) -> Optional[List[str]]:
    """The class names of a zoo model's output (torchvision's ImageNet category list, which
    ships with torchvision: no download), or ``None`` where the model has none (ZFNet, user
    models): classes are then named by index."""
    info = model_info(model)
    if info is not None and info.classes is not None:
        return list(info.classes)
    weights = get_spec(info.name).weights_enum() if info is not None else None
    return list(weights.meta["categories"]) if weights is not None else None


def weights_digest(model: nn.Module) -> str:
    """A short fingerprint of a model's weights (SHA-256 of every parameter and buffer, names,
    shapes, dtypes and values, in state-dict order; 16 hex digits): two models with the same
    digest compute the same function. Scans record it, so that their figures are drawn with
    the weights that found the hits."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
        # the array's own buffer: a copy of the weights (tobytes) took half the time
        digest.update(value.reshape(-1).view(torch.uint8).numpy() if value.numel() else b"")
    return digest.hexdigest()[:16]


def count_parameters(name: str) -> int:
    """Parameter count of a zoo architecture, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = get_spec(name).build(weights=None)
    return sum(p.numel() for p in model.parameters())


WeightsArg = Union[None, str, "os.PathLike[str]"]


def load_model(name: str, weights: WeightsArg = "default") -> nn.Module:
    """Build a zoo model, load its weights, and return it in eval mode.

    Args:
        name: a name from :func:`list_models`, e.g. ``"vgg16"``.
        weights: ``"default"`` for torchvision's ImageNet weights (downloaded once into the
            torch hub cache, with a progress bar), ``None`` or ``"none"`` for random
            initialisation (reproducible: always drawn with seed 0, without touching the
            global random state, so a scan and its figure see the same weights), or the path
            of a checkpoint (a state dict, or a dict holding one under ``"state_dict"`` or
            ``"model"``). A checkpoint written by :func:`deconvviz.train` also gives the
            number of classes, their names and the preprocessing it was trained with. ZFNet
            has no public weights: its default is random initialisation, with an
            :class:`UntrainedWarning`.

    Returns:
        The ``nn.Module``, in eval mode, on the CPU.

    Raises:
        UnknownModelError: ``name`` is not in the zoo.
        WeightsError: the weights cannot be downloaded, found or loaded.

    Examples:
        >>> model = load_model("vgg16", weights=None)
    """
    spec = get_spec(name)
    weights_enum = spec.weights_enum()
    default_prep = (Preprocessing.from_weights(weights_enum)
                    if weights_enum is not None else Preprocessing())
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        model, label, trained = _random(spec), "random", False
    elif isinstance(weights, str) and weights == "default":
        if spec.extra.get("pretrained") == "timm":
            model, label, trained = _timm_pretrained(spec), "pretrained", True
            default_prep = _timm_preprocessing(model)
        elif spec.imagenet_weights is None:
            warnings.warn(
                f"{name} has no public ImageNet weights; using random (untrained) weights. "
                f"Load a checkpoint with weights=PATH (CLI: --weights FILE).",
                UntrainedWarning, stacklevel=2)
            model, label, trained = _random(spec), "random", False
        else:
            model = _imagenet(spec.name, spec.build, weights_enum)
            label, trained = "imagenet", True
    else:
        path = os.fspath(weights)
        checkpoint = _read_checkpoint(path)
        meta = _deconvviz_meta(checkpoint, path, spec.name)
        classes = tuple(meta["classes"]) if meta.get("classes") else None
        if meta.get("preprocessing"):
            default_prep = Preprocessing.from_dict({**default_prep.to_dict(),
                                                    **meta["preprocessing"]})
        classes_out = int(meta.get("num_classes") or 1000)
        # builders registered before ``num_classes`` existed take ``weights`` only; the
        # checkpoint replaces every parameter and buffer (_load_state refuses missing keys)
        with _uninitialised():
            model = (spec.build(weights=None) if classes_out == 1000
                     else spec.build(weights=None, num_classes=classes_out))
        _load_state(model, _state_dict_of(checkpoint, path), path, spec.name,
                    drop_prefixes=spec.extra.get("drop_prefixes", ()))
        label, trained = path, True
        model.eval()
        _attach(model, ModelInfo(name=spec.name, weights=label, trained=trained,
                                 preprocessing=default_prep, classes=classes))
        return model
    model.eval()
    _attach(model, ModelInfo(name=spec.name, weights=label, trained=trained,
                             preprocessing=default_prep))
    return model


def _timm_pretrained(spec) -> nn.Module:
    """timm's pretrained weights (from the Hugging Face cache, offline as the zoo's)."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return spec.build(weights="pretrained")
    except Exception as exc:  # hub, network and file errors: all mean "no weights here"
        raise WeightsError(
            f"no pretrained weights for {spec.name}: timm could not load them "
            f"({first_line(exc)}); use --weights none (weights=None) for random weights or "
            f"--weights FILE (weights=PATH) for a checkpoint") from None


def _timm_preprocessing(model: nn.Module) -> "Preprocessing":
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop = float(cfg.get("crop_pct", 0.875))
    return Preprocessing(resize_size=int(round(size / crop)), crop_size=size,
                         mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
                         std=tuple(cfg.get("std", IMAGENET_STD)))


def checkpoint_payload(model: nn.Module, name: str, *, classes: Optional[List[str]] = None,
                       preprocessing: Optional[Preprocessing] = None, **extra) -> dict:
    """What :func:`load_model` reads back from a deconvviz checkpoint: the state dict (on the
    CPU) with the zoo name, the number and names of the classes and the preprocessing.
    ``extra`` (e.g. ``epoch``) is stored beside them."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out_features = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    meta = {"model": name, "num_classes": len(classes) if classes else
            (out_features[-1] if out_features else 1000),
            "classes": list(classes) if classes else None}
    if preprocessing is not None:
        meta["preprocessing"] = preprocessing.to_dict()
    return {"format": CHECKPOINT_FORMAT, "deconvviz": meta, "state_dict": state, **extra}


def load_weights_into(model: nn.Module, path: Union[str, "os.PathLike[str]"]) -> nn.Module:
    """Load a checkpoint file (any state dict :func:`load_model` reads) into ``model``, in
    place, with the same checks and messages; returns ``model``. A deconvviz checkpoint of
    another zoo model is refused."""
    path = os.fspath(path)
    checkpoint = _read_checkpoint(path)
    info = model_info(model)
    if info is not None:
        _deconvviz_meta(checkpoint, path, info.name)
    _load_state(model, _state_dict_of(checkpoint, path), path,
                info.name if info is not None else type(model).__name__)
    return model


def checkpoint_model(path: Union[str, "os.PathLike[str]"]) -> Optional[str]:
    """The zoo name a deconvviz checkpoint or training state (``last.pt``) records (``None``
    for other state dicts)."""
    path = os.fspath(path)
    checkpoint = _read_checkpoint(path)
    if isinstance(checkpoint, Mapping) and checkpoint.get("format") in (CHECKPOINT_FORMAT,
                                                                        TRAINING_STATE_FORMAT):
        return _deconvviz_meta(checkpoint, path, "").get("model")
    return None


TRAINING_STATE_FORMAT = "deconvviz-train-state/1"  # a run's last.pt (deconvviz train)


def _deconvviz_meta(checkpoint: object, path: str, name: str) -> dict:
    """The metadata of a deconvviz checkpoint or of a training run's ``last.pt`` (``{}`` for
    any other state dict); a checkpoint of another zoo model is refused by name."""
    if isinstance(checkpoint, Mapping) and checkpoint.get("format") == TRAINING_STATE_FORMAT:
        config = checkpoint.get("config") or {}
        classes = list(config.get("classes") or [])
        meta = {"model": config.get("model"), "num_classes": len(classes) or None,
                "classes": classes or None}
        if config.get("crop_size"):  # the zoo's normalisation, the run's sizes
            meta["preprocessing"] = {"resize_size": int(config["resize_size"]),
                                     "crop_size": int(config["crop_size"])}
    elif isinstance(checkpoint, Mapping) and checkpoint.get("format") == CHECKPOINT_FORMAT:
        meta = checkpoint.get("deconvviz") or {}
    else:
        return {}
    if meta.get("model") and name and meta["model"] != name:
        raise WeightsError(f"checkpoint {path} is of model {meta['model']}, not {name}; use "
                           f"--model {meta['model']} (load_model({meta['model']!r}, ...))")
    return dict(meta)


@contextlib.contextmanager
def _uninitialised():
    """Layers built inside skip ``torch.nn.init``'s random draws (their weights are left as
    allocated), for a model whose weights a checkpoint then replaces: ZFNet's 62 M initial
    weights, drawn twice (its layers' own initialisation, then the paper's), took longer
    than reading its checkpoint. Restored on the way out, also after an error."""
    import torch.nn.init as init

    names = [n for n in vars(init) if n.endswith("_") and not n.startswith("_")
             and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}

    def skip(tensor, *args, **kwargs):
        return tensor

    try:
        for n in names:
            setattr(init, n, skip)
        yield
    finally:
        for n, function in saved.items():
            setattr(init, n, function)


def _random(spec) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return spec.build(weights=None)


def cached_weights(name: str) -> Optional[str]:
    """Where the torch hub cache holds ``name``'s ImageNet weights, or ``None`` (not cached,
    or the model has none)."""
    weights_enum = get_spec(name).weights_enum()
    if weights_enum is None:
        return None
    path = _hub_path(weights_enum)
    return path if os.path.isfile(path) else None


def _hub_path(weights_enum) -> str:
    """Where torch.hub keeps (or would download) these weights."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights_enum.url))


def _imagenet(name: str, build, weights_enum) -> nn.Module:
    cached = _hub_path(weights_enum)
    try:
        # torch.hub caches it and shows a progress bar on stderr; its "Downloading: ..." line
        # goes to stdout, which the command line keeps for the paths it writes.
        with contextlib.redirect_stdout(sys.stderr):
            return build(weights=weights_enum)
    except (OSError, ConnectionError) as exc:  # urllib's URLError is an OSError
        if os.path.exists(cached):
            raise WeightsError(f"cannot read cached ImageNet weights {cached}: {exc}") from None
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"no ImageNet weights for {name}: not in the torch hub cache ({cached}) and the "
            f"download failed ({reason}); use --weights none (weights=None) for random weights "
            f"or --weights FILE (weights=PATH) for a checkpoint") from None


def _read_checkpoint(path: str) -> object:
    check_weights(path)  # a folder, or no file: named without torch (the CLI's check too)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read checkpoint {path}: it is not a file written by "
                           f"torch.save ({_why_unreadable(path, exc)})") from None


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str, name: str,
                drop_prefixes=()) -> None:
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()
             if not k.startswith(tuple(drop_prefixes))}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} (checkpoint {list(state[k].shape)}, model {list(v.shape)})"
                   for k, v in expected.items()
                   if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        parts = [f"{label}: {_some(keys)}" for label, keys in
                 [("missing keys", missing), ("unexpected keys", unexpected),
                  ("wrong shapes", wrong_shape)] if keys]
        raise WeightsError(f"checkpoint {path} does not fit {name}: {'; '.join(parts)}")
    model.load_state_dict(state)


def _state_dict_of(checkpoint: object, path: str) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), Mapping):
                return checkpoint[key]
        if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return checkpoint
    raise WeightsError(f"{path} holds no state dict (expected a dict of tensors, or one under "
                       f"'state_dict' or 'model')")


def _why_unreadable(path: str, exc: BaseException) -> str:
    """A reason a person can act on, not the unpickler's opcode number."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    kinds = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"GIF8": "a GIF image",
             b"%PDF": "a PDF document", b"BM": "a BMP image"}
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return f"it looks like {kind}"
    # PyTorch's own advice (re-run with weights_only=False, "your checkpoint file is
    # corrupted") is not for users here: loading untrusted pickles is unsafe.
    text = first_line(exc).split(". ")[0].rstrip(".")
    return text if len(text) > 8 and not text.isdigit() else "unrecognised format"


def _some(keys, n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


