"""The parts of a training run: its settings, result, interruption, the filter
renormalisation, the augmented image folder and its seeded batches, and the step's arithmetic
(:mod:`deconvviz.training.loop` runs them)."""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from .. import figures
from ..data.images import decode_image
from ..data.zoo import Preprocessing, get_spec
from ..errors import ArgumentError, Interrupted, first_line
from ..results import Result

__all__ = ["TrainingInterrupted", "TrainResult", "renormalise_filters", "STATE_FORMAT"]

STATE_FORMAT = "deconvviz-train-state/1"


class TrainingInterrupted(Interrupted):
    """Training stopped early (Ctrl-C); ``RUN/last.pt`` lets ``resume=True`` continue."""


def renormalise_filters(model: nn.Module, radius: float) -> None:
    """Scale every convolutional filter whose RMS exceeds ``radius`` back to ``radius``
    (Zeiler & Fergus, Section 3), in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                w = module.weight
                rms = w.pow(2).mean(dim=tuple(range(1, w.dim())), keepdim=True).sqrt()
                w.mul_((radius / rms).clamp(max=1.0))  # rms 0 gives inf, clamped to 1


@dataclass(frozen=True)
class _Config:
    """What a run is; ``resume`` refuses a ``last.pt`` whose config differs."""

    model: str
    data: str
    val: Optional[str]
    classes: Tuple[str, ...]
    images: str  # how many training images, and a digest of their paths and labels
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    dropout: Optional[float]
    clip_rms: float
    init: str
    resize_size: int
    crop_size: int
    seed: int
    patience: int
    world: int


@dataclass
class TrainResult(Result):
    """The outcome of :func:`train`: ``figure()`` draws its learning curves, ``to_dict()``,
    ``to_csv()`` and ``save("metrics.csv")`` give its metrics per epoch.

    Attributes:
        run: the run folder.
        checkpoints: ``epoch_K.pt`` paths, in epoch order.
        metrics: one dict per epoch (the columns of ``metrics.csv``).
        classes: the class names, in output order.
    """

    run: str
    checkpoints: List[str]
    metrics: List[Dict[str, float]]
    classes: List[str] = field(default_factory=list)
    kind: ClassVar[str] = "training"  # saves .csv besides the figure

    def figure(self, *, fig=None):
        """Loss and top-1 error per epoch, training and validation."""
        return figures.training_curves(self.metrics, title=os.path.basename(
            os.path.normpath(self.run)), fig=fig)

    def _table(self) -> Dict[str, list]:
        """The metrics, one row per epoch (the columns of ``metrics.csv``)."""
        names = list(dict.fromkeys(k for row in self.metrics for k in row))
        return {name: [row.get(name) for row in self.metrics] for name in names}

    def __repr__(self) -> str:
        last = self.metrics[-1] if self.metrics else {}
        tail = (f", epoch {int(last['epoch'])}: loss {last['train_loss']:.4g}, val top-1 error "
                f"{last['val_top1_error']:.3g}" if last else "")
        return f"TrainResult({self.run}, {len(self.checkpoints)} checkpoints{tail})"


# -- data ---------------------------------------------------------------------------------


class _Augmented(Dataset):
    """An ``ImageFolder`` whose random transform is seeded per (seed, epoch, image), so
    augmentation does not depend on workers, ranks or resuming."""

    def __init__(self, folder, transform, seed: int) -> None:
        self.folder, self.transform, self.seed, self.epoch = folder, transform, seed, 0

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        path, target = self.folder.samples[i]
        image = decode_image(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, self.epoch, i))
            return self.transform(image), target


def _mix(*numbers: int) -> int:
    value = 0
    for n in numbers:
        value = (value * 1_000_003 + int(n) + 1) % (2 ** 61 - 1)
    return value


def _image_folder(root: str, what: str):
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(root):
        raise ArgumentError(f"{what} folder not found: {root}")
    try:
        folder = ImageFolder(root, loader=decode_image)
    except FileNotFoundError as exc:
        raise ArgumentError(f"{what} folder {root} holds no images in class sub-folders "
                            f"(expected {root}/<class>/<image>): {first_line(exc)}") from None
    return folder


def _fingerprint(folder) -> str:
    """``"N images, <digest>"`` of an image folder's samples: a resumed run must see the same
    files in the same order (an image added or removed shifts every index)."""
    import hashlib

    digest = hashlib.sha1()
    for path, target in folder.samples:
        digest.update(f"{os.path.relpath(path, folder.root)}\t{target}\n".encode())
    return f"{len(folder.samples)} images, {digest.hexdigest()[:12]}"


def _transforms(prep: Preprocessing, train: bool):
    from torchvision.transforms import v2

    crop = (v2.Compose([v2.RandomCrop(prep.crop_size), v2.RandomHorizontalFlip()]) if train
            else v2.CenterCrop(prep.crop_size))
    return v2.Compose([v2.ToImage(), v2.Resize(prep.resize_size, antialias=True), crop,
                       v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(prep.mean), list(prep.std))])


class _Batches(torch.utils.data.Sampler):
    """This rank's indices of an epoch: a seeded permutation, cut into global batches, each
    split evenly across ranks; incomplete global batches are dropped. ``start`` skips the
    batches already done (resuming mid-epoch)."""

    def __init__(self, n: int, batch: int, rank: int, world: int, seed: int, epoch: int,
                 start: int = 0) -> None:
        generator = torch.Generator().manual_seed(_mix(seed, epoch))
        order = torch.randperm(n, generator=generator).tolist()
        per = batch // world
        self.indices = [i for b in range(start, n // batch)
                        for i in order[b * batch + rank * per:b * batch + (rank + 1) * per]]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# -- the loop -----------------------------------------------------------------------------


def _sums(logits: Tensor, target: Tensor, loss: Tensor) -> Tensor:
    """``[loss * n, top-1 correct, top-5 correct, n]`` of a batch."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == target.unsqueeze(1)
    n = target.shape[0]
    return torch.stack([loss.detach().float() * n, hit[:, 0].sum().float(),
                        hit.any(dim=1).sum().float(), torch.tensor(float(n), device=loss.device)])


def _reduce(sums: Tensor, world: int) -> Tensor:
    sums = sums.clone()
    if world > 1:
        dist.all_reduce(sums)
    return sums


def _rates(sums: Tensor) -> Tuple[float, float, float]:
    loss, top1, top5, n = (float(v) for v in sums)
    if n == 0:
        return math.nan, math.nan, math.nan
    return loss / n, 1 - top1 / n, 1 - top5 / n


def _evaluate(model: nn.Module, loader, device, amp: bool, world: int) -> Tensor:
    model.eval()
    sums = torch.zeros(4, device=device)
    with torch.no_grad(), _autocast(device, amp):
        for x, y in loader:
            x, y = _to(x, device), y.to(device)
            logits = model(x).float()
            sums += _sums(logits, y, F.cross_entropy(logits, y))
    model.train()
    return _reduce(sums, world)


def _autocast(device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(x: Tensor, device) -> Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _build(config: _Config) -> nn.Module:
    spec = get_spec(config.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            model = spec.build(weights=None, num_classes=len(config.classes))
        except TypeError:
            raise ArgumentError(f"{config.model}'s builder takes no num_classes argument; "
                                f"register it with build(weights=None, num_classes=1000) to "
                                f"train it") from None
        for m in model.modules():
            if config.init == "normal" and isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, std=1e-2)  # the paper's N(0, 1e-2) everywhere
            elif config.init == "kaiming" and isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif config.init == "kaiming" and isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                continue
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if config.dropout is not None:
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = config.dropout
    return model


def _check_input_size(model: nn.Module, size: int, name: str, device) -> None:
    """Refuse a crop the model cannot take before any work (not an error deep inside)."""
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, 3, size, size, device=device))
    except RuntimeError as exc:
        raise ArgumentError(f"{name} cannot take {size}x{size} crops ({first_line(exc)}); use a "
                            f"larger --crop") from None
    finally:
        model.train()


def _check_save_at(save_at: Sequence[int]) -> List[int]:
    try:
        epochs = sorted({int(e) for e in save_at})
    except (TypeError, ValueError):
        raise ArgumentError(f"save_at must be epoch numbers, got {save_at!r}") from None
    if any(e < 1 for e in epochs):
        raise ArgumentError("save_at epochs count from 1")
    return epochs
