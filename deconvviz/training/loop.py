"""The training loop: :func:`train` checks its arguments and builds a run; ``_Run`` steps
through the epochs, evaluates, checkpoints and resumes."""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import time
from dataclasses import asdict
from typing import Callable, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from .._io import check_writable_folder, write_atomically
from .._progress import ProgressArg, progress_bar
from .._signatures import api
from ..choices import INITS, PAPER_SAVE_AT
from ..data import jpeg_batches
from ..data.devices import distributed, resolve_device
from ..data.images import preprocessing_for
from ..data.runs import METRICS, run_checkpoints
from ..data.zoo import Preprocessing, checkpoint_payload, get_spec
from ..engine.guard import runs_model
from ..errors import ArgumentError, first_line
from . import gpu_reading
from .recipe import (
    STATE_FORMAT,
    TrainingInterrupted,
    TrainResult,
    _Augmented,
    _autocast,
    _Batches,
    _build,
    _check_input_size,
    _check_save_at,
    _Config,
    _evaluate,
    _fingerprint,
    _image_folder,
    _mix,
    _rates,
    _reduce,
    _sums,
    _to,
    _transforms,
    renormalise_filters,
)

__all__ = ["train"]


@api(legacy=("out",))
@runs_model
def train(model: str, data: Union[str, "os.PathLike[str]"], *,
          out: Union[str, "os.PathLike[str]"],
          val: Union[None, str, "os.PathLike[str]"] = None, epochs: int = 70,
          batch_size: int = 128, lr: float = 1e-2, momentum: float = 0.9,
          weight_decay: float = 0.0, dropout: Optional[float] = None, clip_rms: float = 0.1,
          init: str = "auto", resize_size: Optional[int] = None, crop_size: Optional[int] = None,
          workers: int = 4, device: Optional[str] = None, seed: int = 0,
          save_at: Sequence[int] = PAPER_SAVE_AT, keep_all: bool = False, resume: bool = False,
          patience: int = 2, checkpoint_every: int = 1000, amp: Optional[bool] = None,
          progress: ProgressArg = True,
          callback: Optional[Callable[[int, int, float], None]] = None,
          precision: Optional[str] = None) -> TrainResult:
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
        resize_size: the short side before cropping (default 256, or the model's).
        crop_size: the side of the random crop (default 224, or the model's).
        device: ``None``/``"auto"`` (CUDA where there is one), ``"cpu"``, ``"cuda:1"``, ...
        seed: seeds the initial weights, the data order, augmentation and dropout.
        save_at: epochs whose checkpoints are kept (the last epoch's always is).
        keep_all: keep every epoch's checkpoint.
        resume: continue the run in ``out`` from its ``last.pt``.
        patience: epochs without improvement before the learning rate is divided by 10.
        checkpoint_every: steps between ``last.pt`` saves within an epoch.
        workers: ``DataLoader`` worker processes per process.
        amp: bfloat16 autocast (default: on CUDA, off on CPU).
        progress: as everywhere (docs/api.md), counting images.
        callback: ``callback(epoch, step, loss)`` after every step (epoch from 1, step from 0
            within the epoch): the training loss, not only progress; an exception it raises
            stops training (``KeyboardInterrupt`` saves ``last.pt`` first, as Ctrl-C does).
        precision: ``"exact"`` (default: float32, TF32 off on CUDA) or ``"tf32"``.

    Returns a :class:`TrainResult`; raises :class:`ArgumentError` for a missing or empty
    folder, a single class, a run folder holding a run (without ``resume``) or a different
    one (with it).

    Example: ``train("zfnet", "imagenette2/train", out="runs/zf", val="imagenette2/val")``.
    """
    return _train(**locals())


def _train(model, data, *, out, val, epochs, batch_size, lr, momentum, weight_decay, dropout,
           clip_rms, init, resize_size, crop_size, workers, device, seed, save_at,
           keep_all, resume, patience, checkpoint_every, amp, progress, callback,
           precision) -> TrainResult:
    spec = get_spec(model)
    _check_numbers(epochs, batch_size, workers, checkpoint_every, patience, lr, momentum,
                   weight_decay, clip_rms, dropout, init)
    save_epochs = _check_save_at(save_at)
    out = os.path.abspath(os.fspath(out))
    state_path = _state_path(out, resume)
    folder, val_folder = _folders(data, val)
    prep = _preprocessing(spec.name, resize_size, crop_size)
    world = _world(batch_size, len(folder), data)
    config = _Config(model=spec.name, data=os.path.abspath(os.fspath(data)),
                     val=os.path.abspath(os.fspath(val)) if val is not None else None,
                     classes=tuple(folder.classes), images=_fingerprint(folder),
                     batch_size=batch_size, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, dropout=dropout,
                     clip_rms=clip_rms, init=init, resize_size=prep.resize_size,
                     crop_size=prep.crop_size, seed=seed, patience=patience, world=world)
    with _process(device, world) as (rank, dev):
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


def _preprocessing(name: str, resize_size: Optional[int], crop_size: Optional[int]
                   ) -> Preprocessing:
    base = preprocessing_for(name)
    prep = Preprocessing(resize_size=resize_size or base.resize_size,
                         crop_size=crop_size or base.crop_size, mean=base.mean, std=base.std)
    if prep.crop_size > prep.resize_size:
        raise ArgumentError(f"crop size {prep.crop_size} is larger than the resize "
                            f"{prep.resize_size}")
    return prep


def _world(batch_size: int, images: int, data) -> int:
    """The number of ``torchrun`` processes, checked against the batch size."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch_size % world:
        raise ArgumentError(f"the batch size {batch_size} does not split evenly across "
                            f"{world} processes")
    if images < batch_size:
        raise ArgumentError(f"{data} holds {images} images, fewer than one batch of "
                            f"{batch_size}; use a smaller --batch-size")
    return world


@contextlib.contextmanager
def _process(device: Optional[str], world: int):
    """``(rank, device)`` of this process: in a process group of its own under torchrun,
    the caller's where it already joined one."""
    already = dist.is_available() and dist.is_initialized()
    device = "auto" if device is None else str(device)
    group = distributed(device) if world > 1 and not already else contextlib.nullcontext()
    with group as joined:
        if joined is not None:
            yield joined
            return
        rank, dev = (dist.get_rank() if already else 0), resolve_device(device)
        if already and dev.type == "cuda" and dev.index is None:  # the caller's group
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        yield rank, dev


def _check_numbers(epochs, batch_size, workers, checkpoint_every, patience, lr, momentum,
                   weight_decay, clip_rms, dropout, init) -> None:
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


def _state_path(out: str, resume: bool) -> str:
    """The run's ``last.pt``, checked against ``resume``."""
    state_path = os.path.join(out, "last.pt")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ArgumentError(f"{out} is a file; the run folder must be a folder")
    if resume and not os.path.isfile(state_path):
        raise ArgumentError(f"nothing to resume: {state_path} does not exist")
    if not resume and os.path.exists(state_path):
        raise ArgumentError(f"{out} already holds a training run; use --resume to continue it "
                            f"or choose another folder")
    return state_path


def _folders(data, val):
    """The training folder (two classes at least) and the validation folder, its classes
    mapped onto the training ones."""
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
    return folder, val_folder


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
        # On CUDA, JPEGs are decoded and augmented on the GPU (training/gpu_reading.py)
        self.gpu_reading = jpeg_batches.on_gpu(device)
        if self.gpu_reading:
            self.train_set = gpu_reading.EncodedImages(self.train_set)
            if self.val_set is not None:
                self.val_set = gpu_reading.EncodedImages(self.val_set)
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

    def _loader(self, dataset, sampler):
        """The batches ``(x, y)``: from the loader, or decoded on the GPU from it."""
        loader = DataLoader(dataset, batch_size=self.config.batch_size // self.world,
                            sampler=sampler, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda",
                            persistent_workers=False,
                            collate_fn=gpu_reading.collate if self.gpu_reading else None)
        if self.gpu_reading:
            return gpu_reading.batches_on(loader, self.device, self.prep)
        return loader

    def run(self) -> TrainResult:
        config = self.config
        steps = len(self.train_set) // config.batch_size
        per_epoch = steps * config.batch_size
        self.net.train()
        while self.epoch < self.epochs:
            epoch = self.epoch + 1
            self.train_set.epoch = epoch
            sampler = _Batches(len(self.train_set), config.batch_size, self.rank, self.world,
                               config.seed, epoch, start=self.step)
            bar = progress_bar(self.progress if self.rank == 0 else False, total=per_epoch,
                               initial=self.step * config.batch_size, unit="img",
                               desc=f"epoch {epoch}/{self.epochs}")
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
