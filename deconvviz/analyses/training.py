"""Training a zoo model on an image folder, Zeiler & Fergus's way, with resumable checkpoints.

ZFNet has no public weights; :func:`train` makes them. The defaults are the paper's recipe
(Section 3):

- SGD, momentum 0.9, mini-batches of 128, learning rate 1e-2, lowered tenfold when the
  validation top-1 error stops improving (``ReduceLROnPlateau``; the training loss without a
  validation set), no weight decay (the paper states none);
- dropout 0.5 in fc6 and fc7; ZFNet's weights drawn from N(0, 1e-2), biases 0 (other zoo
  models keep their own initialisation unless ``init="normal"``);
- resize to 256, random 224 crops and horizontal flips (torchvision transforms v2);
- filter renormalisation: after every step, each convolutional filter whose RMS exceeds
  ``clip_rms`` (0.1) is scaled back to that RMS (``clip_rms=0`` turns it off, as the paper's
  Fig. 6(a) needs).

What a run writes in its folder ``RUN/``:

- ``epoch_K.pt`` at the epochs in ``save_at`` (the paper's Fig. 4 epochs) and the last one
  (every epoch with ``keep_all``): checkpoints that ``load_model(name, weights=path)`` and
  every command's ``--weights`` read, with the class names and preprocessing;
- ``metrics.csv``: per epoch, the learning rate, loss and top-1/top-5 error for training and
  validation, seconds and images/s;
- ``last.pt``: the full training state (model, optimiser, scheduler, position in the epoch,
  running sums), written every ``checkpoint_every`` steps, at each epoch's end and on Ctrl-C.
  ``resume=True`` continues from it.

Reproducibility: the data order is seeded per epoch, each image's augmentation per (seed,
epoch, image) and the dropout masks per (seed, epoch, step, rank), so a resumed run ends with
the same weights as an uninterrupted one on the same machine and thread count, whatever the
number of DataLoader workers.

Distributed: under ``torchrun`` each process trains on its share of every global batch
(``batch_size`` is the global batch, split evenly) with ``DistributedDataParallel`` (NCCL on
GPU, gloo on CPU). On CUDA, mixed precision (bfloat16 autocast) and channels-last are on by
default.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .. import figures
from .._io import check_writable_folder, write_atomically
from ..choices import INITS, PAPER_SAVE_AT
from ..data.devices import distributed, resolve_device
from ..data.images import decode_image, preprocessing_for
from ..data.zoo import Preprocessing, checkpoint_payload, get_spec
from ..errors import ArgumentError, Interrupted, first_line

__all__ = ["train", "TrainResult", "renormalise_filters", "read_metrics", "run_checkpoints",
           "PAPER_SAVE_AT", "TrainingInterrupted"]

STATE_FORMAT = "deconvviz-train-state/1"
METRICS = ("epoch", "lr", "train_loss", "train_top1_error", "train_top5_error", "val_loss",
           "val_top1_error", "val_top5_error", "seconds", "images_per_s")


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
class TrainResult:
    """The outcome of :func:`train`.

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

    def figure(self):
        """Loss and top-1 error per epoch, training and validation."""
        return figures.training_curves(self.metrics, title=os.path.basename(
            os.path.normpath(self.run)))

    def __repr__(self) -> str:
        last = self.metrics[-1] if self.metrics else {}
        tail = (f", epoch {int(last['epoch'])}: loss {last['train_loss']:.4g}, val top-1 error "
                f"{last['val_top1_error']:.3g}" if last else "")
        return f"TrainResult({self.run}, {len(self.checkpoints)} checkpoints{tail})"


def read_metrics(run: Union[str, "os.PathLike[str]"]) -> List[Dict[str, float]]:
    """The rows of ``RUN/metrics.csv`` as floats (``nan`` where there was no validation)."""
    path = os.path.join(os.fspath(run), "metrics.csv")
    if not os.path.isfile(path):
        raise ArgumentError(f"no metrics.csv in {run}")
    with open(path, newline="") as handle:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()}
                for row in csv.DictReader(handle)]


def run_checkpoints(run: Union[str, "os.PathLike[str]"]) -> List[str]:
    """The ``epoch_K.pt`` files of a run folder, in epoch order."""
    run = os.fspath(run)
    if not os.path.isdir(run):
        raise ArgumentError(f"run folder not found: {run}")
    found = []
    for name in os.listdir(run):
        stem, ext = os.path.splitext(name)
        if ext == ".pt" and stem.startswith("epoch_") and stem[6:].isdigit():
            found.append((int(stem[6:]), os.path.join(run, name)))
    if not found:
        raise ArgumentError(f"no epoch_K.pt checkpoints in {run}")
    return [p for _, p in sorted(found)]


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


def train(model: str, data: Union[str, "os.PathLike[str]"], out: Union[str, "os.PathLike[str]"],
          *, val: Union[None, str, "os.PathLike[str]"] = None, epochs: int = 70,
          batch_size: int = 128, lr: float = 1e-2, momentum: float = 0.9,
          weight_decay: float = 0.0, dropout: Optional[float] = None, clip_rms: float = 0.1,
          init: str = "auto", resize_size: Optional[int] = None, crop_size: Optional[int] = None,
          workers: int = 4, device: str = "auto", seed: int = 0,
          save_at: Sequence[int] = PAPER_SAVE_AT, keep_all: bool = False, resume: bool = False,
          patience: int = 2, checkpoint_every: int = 1000, amp: Optional[bool] = None,
          progress: bool = True,
          callback: Optional[Callable[[int, int, float], None]] = None) -> TrainResult:
    """Train zoo model ``model`` from scratch on the image folder ``data``.

    Args:
        model: a zoo name (``"zfnet"``, ``"alexnet"``, ...); its classifier gets one output
            per class of ``data``.
        data: a ``torchvision.datasets.ImageFolder`` tree (``data/<class>/<image>``).
        out: the run folder (created; its parent must exist).
        val: a validation tree with the same classes (or some of them).
        epochs: epochs in all (the paper: 70).
        batch_size: the global mini-batch (split across ``torchrun`` processes).
        lr: SGD's learning rate.
        momentum: SGD's momentum.
        weight_decay: SGD's weight decay (L2).
        dropout: the dropout probability of every ``nn.Dropout`` (``None``: the model's
            own, 0.5 in fc6/fc7 for ZFNet and AlexNet; 0 turns dropout off).
        clip_rms: the filter renormalisation radius (0: off).
        init: ``"auto"`` (ZFNet's N(0, 1e-2); other models their own), ``"normal"`` (N(0,
            1e-2) weights, zero biases everywhere) or ``"kaiming"`` (He et al.'s normal
            initialisation, zero biases: trains much sooner than the paper's).
        resize_size: the short side before cropping (default 256, or the model's
            preprocessing).
        crop_size: the side of the random crop (default 224, or the model's).
        workers: ``DataLoader`` worker processes per process.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        seed: seeds the initial weights, the data order, augmentation and dropout.
        save_at: epochs whose checkpoints are kept (the last epoch's always is).
        keep_all: keep every epoch's checkpoint.
        resume: continue the run in ``out`` from its ``last.pt``.
        patience: epochs without improvement before the learning rate is divided by 10.
        checkpoint_every: steps between ``last.pt`` saves within an epoch.
        amp: bfloat16 autocast (default: on CUDA, off on CPU).
        progress: a progress bar on stderr with images/s.
        callback: ``callback(epoch, step, loss)`` after every step (epoch from 1, step from 0
            within the epoch); an exception it raises stops training (``KeyboardInterrupt``
            saves ``last.pt`` first, as Ctrl-C does).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ArgumentError: a missing or empty folder, a single class, a run folder that already
            holds a run (without ``resume``) or a different one (with it).

    Examples:
        >>> train("zfnet", "imagenette2/train", "runs/zf", val="imagenette2/val", epochs=30)
    """
    spec = get_spec(model)
    if epochs < 1 or batch_size < 1 or workers < 0 or checkpoint_every < 1 or patience < 0:
        raise ArgumentError("epochs, batch size and checkpoint interval must be >= 1, workers "
                            "and patience >= 0")
    if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or clip_rms < 0:
        raise ArgumentError("lr must be > 0, momentum in [0, 1), weight decay and clip_rms "
                            ">= 0")
    if dropout is not None and not 0 <= dropout < 1:
        raise ArgumentError(f"dropout must be in [0, 1), got {dropout}")
    if init not in INITS:
        raise ArgumentError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    save_epochs = _check_save_at(save_at)
    out = os.path.abspath(os.fspath(out))
    state_path = os.path.join(out, "last.pt")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ArgumentError(f"{out} is a file; the run folder must be a folder")
    if resume and not os.path.isfile(state_path):
        raise ArgumentError(f"nothing to resume: {state_path} does not exist")
    if not resume and os.path.exists(state_path):
        raise ArgumentError(f"{out} already holds a training run; use --resume to continue it "
                            f"or choose another folder")
    folder = _image_folder(os.fspath(data), "training")
    if len(folder.classes) < 2:
        raise ArgumentError(f"training needs at least two classes (sub-folders) in {data}; "
                            f"found {len(folder.classes)}: {', '.join(folder.classes)}")
    val_folder = _image_folder(os.fspath(val), "validation") if val is not None else None
    if val_folder is not None:
        extra = [c for c in val_folder.classes if c not in folder.class_to_idx]
        if extra:
            raise ArgumentError(f"validation class {extra[0]!r} is not a training class; "
                                f"training classes: {', '.join(folder.classes[:10])}"
                                + (" ..." if len(folder.classes) > 10 else ""))
        val_folder.samples = [(p, folder.class_to_idx[val_folder.classes[t]])
                              for p, t in val_folder.samples]
    base = preprocessing_for(spec.name)
    prep = Preprocessing(resize_size=resize_size or base.resize_size,
                         crop_size=crop_size or base.crop_size, mean=base.mean, std=base.std)
    if prep.crop_size > prep.resize_size:
        raise ArgumentError(f"crop size {prep.crop_size} is larger than the resize "
                            f"{prep.resize_size}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch_size % world:
        raise ArgumentError(f"the batch size {batch_size} does not split evenly across "
                            f"{world} processes")
    if len(folder) < batch_size:
        raise ArgumentError(f"{data} holds {len(folder)} images, fewer than one batch of "
                            f"{batch_size}; use a smaller --batch-size")
    config = _Config(model=spec.name, data=os.path.abspath(os.fspath(data)),
                     val=os.path.abspath(os.fspath(val)) if val is not None else None,
                     classes=tuple(folder.classes), images=_fingerprint(folder),
                     batch_size=batch_size, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, dropout=dropout,
                     clip_rms=clip_rms, init=init, resize_size=prep.resize_size,
                     crop_size=prep.crop_size, seed=seed, patience=patience, world=world)
    already = dist.is_available() and dist.is_initialized()
    group = distributed(device) if world > 1 and not already else contextlib.nullcontext()
    with group as joined:
        if joined is not None:
            rank, dev = joined
        else:
            rank, dev = (dist.get_rank() if already else 0), resolve_device(device)
            if already and dev.type == "cuda" and dev.index is None:  # the caller's group
                dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if rank == 0:
            os.makedirs(out, exist_ok=True)
            check_writable_folder(state_path)  # before any work, not at the first save
        # the data order, augmentation and dropout are seeded here; the caller's random
        # state is left as it was
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            return _Run(config, out, folder, val_folder, prep, rank, world, dev,
                        epochs=epochs, workers=workers, save_epochs=save_epochs,
                        keep_all=keep_all, resume=resume, checkpoint_every=checkpoint_every,
                        amp=(dev.type == "cuda") if amp is None else amp, progress=progress,
                        callback=callback).run()


class _Run:
    """One training process: the model, its optimiser and the epoch loop."""

    def __init__(self, config: _Config, out: str, folder, val_folder, prep: Preprocessing,
                 rank: int, world: int, device, *, epochs: int, workers: int,
                 save_epochs: Sequence[int], keep_all: bool, resume: bool,
                 checkpoint_every: int, amp: bool, progress: bool,
                 callback: Optional[Callable[[int, int, float], None]]) -> None:
        self.config, self.out, self.prep = config, out, prep
        self.rank, self.world, self.device = rank, world, device
        self.epochs, self.workers, self.save_epochs = epochs, workers, save_epochs
        self.keep_all, self.resume, self.checkpoint_every = keep_all, resume, checkpoint_every
        self.amp, self.progress, self.callback = amp, progress, callback
        self.train_set = _Augmented(folder, _transforms(prep, True), config.seed)
        self.val_set = (_Augmented(val_folder, _transforms(prep, False), config.seed)
                        if val_folder is not None else None)
        model = _build(config).to(device)
        _check_input_size(model, prep.crop_size, config.model, device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.net = (nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
            if world > 1 else model)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr,
                                         momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=0.1, patience=config.patience)
        self.epoch, self.step, self.metrics, self.elapsed = 0, 0, [], 0.0
        self.sums = torch.zeros(4, device=device)
        if self.resume:
            self._load_state()

    # -- state ----------------------------------------------------------------------------

    def _state(self, sums: Tensor) -> dict:
        return {"format": STATE_FORMAT, "config": asdict(self.config), "epoch": self.epoch,
                "step": self.step, "sums": sums.cpu(), "metrics": self.metrics,
                "elapsed": self.elapsed,
                "model": {k: v.detach().cpu().contiguous()
                          for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def _save_state(self, collective: bool = True) -> None:
        sums = _reduce(self.sums, self.world) if collective else self.sums
        if self.rank == 0:
            state = self._state(sums)
            write_atomically(os.path.join(self.out, "last.pt"),
                             lambda f: torch.save(state, f))

    def _load_state(self) -> None:
        path = os.path.join(self.out, "last.pt")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ArgumentError(f"cannot read {path}: {first_line(exc)}") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ArgumentError(f"{path} is not a deconvviz training state")
        saved = dict(state["config"])
        saved["classes"] = tuple(saved["classes"])
        if saved != asdict(self.config):
            diff = [k for k in saved if saved[k] != asdict(self.config).get(k)]
            raise ArgumentError(f"{path} is from a different run ({', '.join(diff)} differ); "
                                f"drop --resume and choose another folder, or resume with the "
                                f"same settings")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.metrics, self.elapsed = list(state["metrics"]), float(state["elapsed"])
        # the saved sums are the sum over ranks: rank 0 carries them on
        self.sums = (state["sums"].to(self.device) if self.rank == 0
                     else torch.zeros(4, device=self.device))

    # -- the loop -------------------------------------------------------------------------

    def _loader(self, dataset, sampler) -> DataLoader:
        return DataLoader(dataset, batch_size=self.config.batch_size // self.world,
                          sampler=sampler, num_workers=self.workers,
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def run(self) -> TrainResult:
        from tqdm import tqdm

        config = self.config
        steps = len(self.train_set) // config.batch_size
        per_epoch = steps * config.batch_size
        self.net.train()
        while self.epoch < self.epochs:
            epoch = self.epoch + 1
            self.train_set.epoch = epoch
            sampler = _Batches(len(self.train_set), config.batch_size, self.rank, self.world,
                               config.seed, epoch, start=self.step)
            bar = tqdm(total=per_epoch, initial=self.step * config.batch_size, unit="img",
                       desc=f"epoch {epoch}/{self.epochs}", dynamic_ncols=True,
                       disable=not self.progress or self.rank != 0)
            started = time.perf_counter()
            try:
                for x, y in self._loader(self.train_set, sampler):
                    loss = self._step(epoch, x, y)
                    self.step += 1
                    bar.update(config.batch_size)
                    shown = self.step % 10 == 0 or self.step == steps
                    if shown or self.callback is not None:  # a sync: not at every step
                        value = float(loss)
                        if shown:
                            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                        if self.callback is not None:
                            self.callback(epoch, self.step - 1, value)
                    if self.step % self.checkpoint_every == 0 and self.step < steps:
                        self.elapsed += time.perf_counter() - started
                        started = time.perf_counter()
                        self._save_state()
            except KeyboardInterrupt:
                self.elapsed += time.perf_counter() - started
                if self.world == 1:  # other ranks may be gone: keep the last saved step
                    self._save_state(collective=False)
                raise TrainingInterrupted(
                    f"interrupted in epoch {epoch} after step {self.step} of {steps}; run "
                    f"again with --resume to continue" + ("" if self.world == 1 else
                                                          " (from the last saved step)")
                ) from None
            finally:
                bar.close()
            self.elapsed += time.perf_counter() - started
            self._end_epoch(epoch, steps)
        return TrainResult(run=self.out, checkpoints=run_checkpoints(self.out),
                           metrics=self.metrics, classes=list(config.classes))

    def _step(self, epoch: int, x: Tensor, y: Tensor) -> Tensor:
        """One SGD step (and the renormalisation); returns the detached loss."""
        torch.manual_seed(_mix(self.config.seed, epoch, self.step, self.rank))  # dropout
        x, y = _to(x, self.device), y.to(self.device, non_blocking=True)
        with _autocast(self.device, self.amp):
            logits = self.net(x).float()
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.config.clip_rms > 0:
            renormalise_filters(self.model, self.config.clip_rms)
        self.sums += _sums(logits.detach(), y, loss)
        return loss.detach()

    def _end_epoch(self, epoch: int, steps: int) -> None:
        train = _rates(_reduce(self.sums, self.world))
        valid = (_rates(_evaluate(self.net, self._val_loader(), self.device, self.amp,
                                  self.world))
                 if self.val_set is not None else (math.nan,) * 3)
        lr = self.optimizer.param_groups[0]["lr"]
        row = dict(zip(METRICS, (epoch, lr, *train, *valid, self.elapsed,
                                 steps * self.config.batch_size / max(self.elapsed, 1e-9))))
        self.metrics.append(row)
        self.scheduler.step(valid[1] if self.val_set is not None else train[0])
        self.epoch, self.step, self.elapsed = epoch, 0, 0.0
        self.sums = torch.zeros(4, device=self.device)
        if self.rank == 0:
            if epoch in self.save_epochs or self.keep_all or epoch == self.epochs:
                payload = checkpoint_payload(self.model, self.config.model,
                                             classes=list(self.config.classes),
                                             preprocessing=self.prep, epoch=epoch,
                                             metrics=row)
                write_atomically(os.path.join(self.out, f"epoch_{epoch}.pt"),
                                 lambda f: torch.save(payload, f))
            self._write_metrics()
        self._save_state(collective=False)  # sums are zero at an epoch's end
        if self.world > 1:
            dist.barrier()

    def _val_loader(self):
        shard = Subset(self.val_set, range(self.rank, len(self.val_set), self.world))
        return self._loader(shard, None)

    def _write_metrics(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRICS, lineterminator="\n")
        writer.writeheader()
        for row in self.metrics:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                                 (int(v) if k == "epoch" else f"{v:.6g}"))
                             for k, v in row.items()})
        text = buffer.getvalue().encode()
        write_atomically(os.path.join(self.out, "metrics.csv"), lambda f: f.write(text))
