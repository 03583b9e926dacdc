"""Dataset scan: the strongest activations of every feature across an image collection.

For each requested layer and each feature (channel), :func:`scan` keeps the ``top`` strongest
activations over all images, at most one per image (that image's strongest location for the
feature). Only the running top-k is kept, so memory stays flat in the number of images.

- Batched through a ``DataLoader`` (``batch_size``, ``workers``); unreadable files are skipped
  and listed in ``result.skipped``, never fatal. On CUDA the workers hand over JPEGs' bytes,
  decoded and preprocessed on the GPU a batch at a time (:mod:`deconvviz.data.jpeg_batches`),
  batches come from pinned memory and the next one is prepared before the current one is
  scanned; ``DECONVVIZ_GPU_DECODE=0`` keeps the CPU's decoding.
- Reproducible: hits are ordered by value, then by the image's position in the list, so the
  order in which images arrive never matters. What is guaranteed:

  * the same batch size, thread count and device give bit-identical results (so does a
    resumed scan: it continues with the same batches);
  * across batch sizes, DataLoader workers, thread counts and ``torchrun`` process counts,
    PyTorch does not promise bit-identical convolutions (it picks kernels by shape and
    thread count), so hit values agree to a relative tolerance, :data:`VALUE_RTOL` of the
    layer's strongest hit, and the hits themselves are the same except where two candidates
    are tied within that tolerance, whose order may swap (at the end of a top-k list, a
    near-tied hit may be replaced by its twin). :func:`same_hits` checks exactly this.
- Resumable: the running state is checkpointed atomically every ``checkpoint_every`` images
  (and on Ctrl-C); ``resume=True`` continues from it and ends with the same result.
- Distributed: under ``torchrun`` (``torch.distributed``: gloo on CPU, NCCL on GPU) each rank
  scans a disjoint shard and the per-feature top-k are merged.
- The distribution (format 3): per feature, a histogram of every image's strongest
  activation in fixed bins (:mod:`.activation_histogram`), so ranks and resumed runs merge
  it by adding integer counts: it is exactly that of one straight run over the same values.
"""
from __future__ import annotations

import datetime
import os
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._io import check_output_path, write_atomically
from ..data import jpeg_batches
from ..data.devices import model_device
from ..data.images import load_image, preprocessing_for
from ..data.prefetch import one_ahead
from ..data.zoo import Preprocessing, model_info, model_name, weights_digest
from ..engine.passes.graph import trace
from ..engine.passes.layers import aliases_of, resolve_layer
from ..engine.passes.recording import forward_to
from ..engine.precision import current_precision, precise
from ..errors import ArgumentError, DeconvvizError, ImageError, Interrupted
from . import activation_histogram
from .relevance_scan import RANKS, RelevanceRanker
from .scan_result import FORMAT, ScanResult

__all__ = ["scan", "list_images", "ScanInterrupted", "ResumeWarning"]

class ScanInterrupted(Interrupted):
    """The scan stopped early (Ctrl-C); its checkpoint lets ``resume=True`` continue."""


class ResumeWarning(UserWarning):
    """``resume=True`` found no checkpoint: the scan starts from the first image."""


def _stored_weights(weights: str) -> str:
    """A checkpoint's path as a scan stores it: absolute, so the scan opens anywhere."""
    if weights in ("imagenet", "random", "pretrained", "user"):
        return weights
    return os.path.abspath(weights)


def list_images(source: Union[str, os.PathLike]) -> List[str]:
    """The images of ``source``: every (non-hidden) file under a folder, recursively, in
    sorted order; or the paths listed in a text file, one per line (``#`` comments)."""
    source = os.fspath(source)
    if os.path.isdir(source):
        found = []
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        if not found:
            raise ArgumentError(f"no files in {source}")
        return found
    if os.path.isfile(source):
        with open(source, encoding="utf-8", errors="replace") as handle:
            lines = [l.strip() for l in handle]
        paths = [l for l in lines if l and not l.startswith("#")]
        if not paths:
            raise ArgumentError(f"{source} lists no image paths")
        return paths
    raise ArgumentError(f"image source not found: {source} (give a folder or a text file of "
                        f"paths)")


class _Images(Dataset):
    """Each image as the model's input; with ``gpu``, a JPEG the GPU can decode as its bytes
    (:mod:`deconvviz.data.jpeg_batches`), decoded there a batch at a time."""

    def __init__(self, paths: Sequence[str], indices: Sequence[int], prep: Preprocessing,
                 gpu: bool = False):
        self.paths, self.indices, self.prep, self.gpu = paths, list(indices), prep, gpu

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        path = self.paths[index]
        if self.gpu and jpeg_batches.gpu_decodable(path):
            return index, jpeg_batches.read_jpeg(path), _RAW
        try:
            x, _ = load_image(path, preprocessing=self.prep)
            return index, x[0], ""
        except DeconvvizError as exc:
            return index, None, str(exc)


_RAW = "jpeg bytes"


def _collate(batch):
    """A loader's batch: CPU-decoded images stacked, JPEG bytes packed into one buffer
    (a worker hands each tensor over through its own shared-memory file: with one tensor a
    JPEG, a VGG16 scan on an H200 read 544 images/s, with one buffer a batch 661)."""
    good = [(i, x) for i, x, why in batch if x is not None and why != _RAW]
    raw = jpeg_batches.pack([(i, data) for i, data, why in batch if why == _RAW])
    failed = [(i, why) for i, x, why in batch if x is None]
    if not good:
        return [], None, failed, raw
    return [i for i, _ in good], torch.stack([x for _, x in good]), failed, raw


def _on_device(batch, device, paths: Sequence[str], prep: Preprocessing):
    """A loader's batch on ``device``: CPU-decoded images copied (from pinned memory, without
    waiting), JPEG bytes decoded and preprocessed there."""
    indices, x, failed, raw = batch
    indices = list(indices)
    raw = jpeg_batches.unpack(raw)
    if x is not None:
        x = x.to(device, non_blocking=True)
    if raw:
        ids = [i for i, _ in raw]
        decoded, kept, bad = jpeg_batches.decode_batch([d for _, d in raw],
                                                       [paths[i] for i in ids], prep, device)
        failed = failed + [(ids[p], why) for p, why in bad]
        if kept:
            indices += [ids[p] for p in kept]
            x = decoded if x is None else torch.cat([x, decoded])
    return indices, x, failed


_KEYS = ("values", "images", "ys", "xs", "runner_ups")


def _empty_tops(channels: int, k: int, device) -> Dict[str, Tensor]:
    return {"values": torch.full((channels, k), float("-inf"), device=device),
            "images": torch.full((channels, k), -1, dtype=torch.long, device=device),
            "ys": torch.zeros((channels, k), dtype=torch.long, device=device),
            "xs": torch.zeros((channels, k), dtype=torch.long, device=device),
            "runner_ups": torch.full((channels, k), float("-inf"), device=device)}


def _merge(tops: Dict[str, Tensor], candidates: Dict[str, Tensor], k: int) -> Dict[str, Tensor]:
    """Merge candidates ``[C, M]`` into the running top-k ``[C, k]``: strongest first, ties
    broken by the image's position in the list (so the order of arrival never matters)."""
    merged = {key: torch.cat([tops[key], candidates[key]], dim=1) for key in _KEYS}
    by_image = torch.argsort(merged["images"], dim=1, stable=True)
    merged = {key: t.gather(1, by_image) for key, t in merged.items()}
    by_value = torch.argsort(merged["values"], dim=1, descending=True, stable=True)[:, :k]
    return {key: t.gather(1, by_value) for key, t in merged.items()}


def _candidates(act: Tensor, indices: Tensor) -> Dict[str, Tensor]:
    """Each image's strongest location per feature, as ``[C, B]`` tensors: its value, image
    id, row, column, and the strongest value elsewhere in the same map (``runner_ups``: a
    position tie within one image shows there). A location whose activation is not positive
    is not a hit: it becomes an empty slot (value ``-inf``, image ``-1``). ``strongest``
    (``[B, C]``) keeps every image's strongest value, fired or not, for the distribution."""
    b, c = act.shape[:2]
    flat = act.reshape(b, c, -1)
    values, pos = flat.max(dim=2)  # the first maximum on exact ties, as documented
    if flat.shape[2] > 1:
        runner_ups = flat.scatter(2, pos.unsqueeze(2), float("-inf")).amax(dim=2)
    else:
        runner_ups = torch.full_like(values, float("-inf"))
    width = act.shape[-1] if act.dim() == 4 else 1
    images = indices.to(act.device).reshape(b, 1).expand(b, c)
    fired = values > 0
    return {"values": torch.where(fired, values, float("-inf")).T,
            "images": torch.where(fired, images, -1).T,
            "ys": (pos // width).T, "xs": (pos % width).T, "runner_ups": runner_ups.T,
            "strongest": values}  # [B, C], fired or not: the distribution counts every image


def _versions() -> Dict[str, str]:
    """The versions a scan was made with (read from the modules themselves, so that a
    checkout on ``PYTHONPATH``, not installed, is described too)."""
    import torchvision

    from .._version import __version__

    return {"deconvviz": str(__version__), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__)}


def _distributed() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@precise
def scan(model: nn.Module, source: Union[str, os.PathLike, Sequence[str]], layers: Sequence[str],
         *, top: int = 9, batch_size: int = 32, workers: int = 0,
         out: Optional[Union[str, os.PathLike]] = None, resume: bool = False,
         checkpoint_every: int = 256, progress: bool = True,
         preprocessing: Optional[Preprocessing] = None, rank: str = "activation",
         relevance_target: Optional[int] = None, relevance_method: str = "lrp",
         precision: Optional[str] = None) -> ScanResult:
    """Scan a collection of images for the strongest activations of every feature.

    Args:
        model: the network (zoo model or any traceable CNN), on the device to scan on.
        source: a folder (recursive), a text file listing image paths, or a list of paths;
            the result stores them as absolute paths (as it does a checkpoint's path), so
            that it opens from any working folder.
        layers: layer names (aliases or module paths).
        top: hits kept per feature.
        batch_size: images per batch (the ``DataLoader``'s).
        workers: ``DataLoader`` worker processes.
        out: where to save the result; checkpoints go beside it (``OUT.partial``).
        resume: continue from ``OUT.partial`` if present (if not, a :class:`ResumeWarning`
            says so and the scan starts from the first image).
        checkpoint_every: images between checkpoints.
        progress: a progress bar on stderr (images/s).
        preprocessing: overrides the model's preprocessing.
        rank: ``"relevance"`` also keeps each unit's top images by its relevance for each
            image's predicted class (relevance maximisation, :mod:`.relevance_scan`):
            ``result.relevance_top(layer, feature)``.
        relevance_target: the class whose relevance ranks them (default: each image's
            predicted class).
        relevance_method: the LRP method (default ``lrp``).
        precision: ``"exact"`` (default: float32, TF32 off on CUDA) or ``"tf32"``; recorded
            in the result with the device's type.

    Returns:
        A :class:`ScanResult` (also saved to ``out`` when given).

    Examples:
        >>> result = scan(load_model("zfnet", weights=None), "photos/", ["conv1", "conv5"])
        >>> result.top("conv5", 12)[0]
        Hit(value=..., image='/home/me/photos/cat.jpg', y=6, x=4)
    """
    if not isinstance(top, int) or top < 1:
        raise ArgumentError(f"top must be a positive number of hits, got {top!r}")
    if batch_size < 1 or workers < 0 or checkpoint_every < 1:
        raise ArgumentError("batch size and checkpoint interval must be >= 1, workers >= 0")
    layers = list(layers)
    if not layers:
        raise ArgumentError("no layers to scan")
    if rank not in RANKS:
        raise ArgumentError(f"rank is one of {', '.join(RANKS)}, got {rank!r}")
    if out is not None:  # before any work: a scan must not end in an unwritable folder
        check_output_path(os.fspath(out), formats=None)
    # Absolute paths: the scan opens from any working folder (atlas, figure).
    paths = [os.path.abspath(os.fspath(p)) for p in
             (source if isinstance(source, (list, tuple)) else list_images(source))]
    traced = trace(model)
    aliases = aliases_of(model)
    resolved = [resolve_layer(traced, layer, aliases) for layer in layers]
    nodes = [node for _, _, node in resolved]
    prep = preprocessing or preprocessing_for(model)
    info = model_info(model)
    device = model_device(model)
    forward = forward_to(traced, nodes, (prep.crop_size, prep.crop_size))
    with torch.no_grad():
        probe = forward(torch.zeros(2, 3, prep.crop_size, prep.crop_size, device=device))
    meta = {
        "model": model_name(model),
        "weights": _stored_weights(info.weights) if info else "user",
        # hashed beside the scan (hashlib and the copy off a GPU let other threads run): a
        # VGG16's 553 MB take 0.32 s on this project's CPU, a tenth of a 2,048-image scan's
        # 3.1 s on an H200
        "weights_digest": _beside(weights_digest, model),
        "layers": [{"name": l, "path": p, "shape": list(a.shape[1:])}
                   for l, (_, p, _), a in zip(layers, resolved, probe)],
        "preprocessing": prep.to_dict(),
        "images": paths, "top": top, "versions": _versions(),
        # what computed the values: a resumed scan keeps its precision, may change device
        "precision": current_precision(), "device": device.type,
        # who decoded the JPEGs: nvJPEG's pixels differ from Pillow's by a few grey levels
        "decoder": "nvjpeg" if jpeg_batches.on_gpu(device) else "pillow",
    }
    ranker = (RelevanceRanker(model, layers, relevance_target, relevance_method)
              if rank == "relevance" else None)
    if ranker is not None:
        meta["relevance"] = ranker.meta()
    rank_id, world = _distributed()
    # At most one hit per image: memory and file size follow the hits that can be kept.
    keep = max(1, min(top, len(paths)))
    shard = list(range(rank_id, len(paths), world))
    state = {"done": 0, "skipped": [],
             "tops": {l: _empty_tops(a.shape[1], keep, device) for l, a in zip(layers, probe)},
             "hists": {l: activation_histogram.empty(a.shape[1], device)
                       for l, a in zip(layers, probe)},
             "rel_tops": {l: _empty_tops(a.shape[1], keep, device)
                          for l, a in zip(layers, probe)} if ranker is not None else {}}
    partial = _checkpoint_path(out, rank_id, world)
    lock = _claim(partial)
    try:
        if resume and partial and os.path.exists(partial):
            state = _load_checkpoint(partial, _settled(meta), device)
            if state.pop("decoder", meta["decoder"]) != meta["decoder"]:
                meta["decoder"] = "mixed"  # resumed on another device
        elif resume and partial and rank_id == 0:
            warnings.warn(f"no checkpoint to resume from ({partial} does not exist): "
                          f"scanning from the start", ResumeWarning, stacklevel=2)
        gpu = jpeg_batches.on_gpu(device)
        loader = DataLoader(_Images(paths, shard[state["done"]:], prep, gpu=gpu),
                            batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                            pin_memory=device.type == "cuda")
        batches = one_ahead(loader, lambda b: _on_device(b, device, paths, prep))
        from tqdm import tqdm

        bar = tqdm(total=len(shard), initial=state["done"], unit="img", desc=f"scan {meta['model']}",
                   disable=not progress or rank_id != 0, dynamic_ncols=True)
        since = 0
        try:
            for indices, x, failed in batches:
                tops, hists, rel_tops = state["tops"], state["hists"], state["rel_tops"]
                if x is not None:
                    with torch.no_grad():
                        acts = forward(x)
                    ids = torch.tensor(indices)
                    found = {layer: _candidates(act, ids) for layer, act in zip(layers, acts)}
                    tops = {layer: _merge(tops[layer], found[layer], k=keep) for layer in layers}
                    hists = {layer: activation_histogram.accumulate(hists[layer],
                                                                    found[layer]["strongest"])
                             for layer in layers}
                    if ranker is not None:  # one batched relevance pass
                        found = ranker.candidates(x.to(device), ids)
                        rel_tops = {layer: _merge(rel_tops[layer], found[layer], k=keep)
                                    for layer in layers}
                # The batch counts only once all of it is merged, so an interruption never
                # leaves half a batch in the state.
                n = len(indices) + len(failed)
                state = {"tops": tops, "hists": hists, "done": state["done"] + n,
                         "skipped": state["skipped"] + failed, "rel_tops": rel_tops}
                since += n
                bar.update(n)
                if partial and since >= checkpoint_every:
                    _save_checkpoint(partial, _settled(meta), state)
                    since = 0
        except KeyboardInterrupt:
            if partial:
                _save_checkpoint(partial, _settled(meta), state)
                raise ScanInterrupted(f"interrupted after {state['done']} of {len(shard)} images; "
                                      f"run again with --resume to continue") from None
            raise
        finally:
            bar.close()
        tops, hists, skipped, rel_tops = _gather(state, world)
        if paths and len(skipped) == len(paths):
            index, why = min(skipped)
            first = paths[index]
            if partial and os.path.exists(partial):
                os.unlink(partial)
            raise ImageError(f"no readable image: all {len(paths)} file(s) were skipped; the "
                             f"first, {first}: {why}")
        result = ScanResult({"format": FORMAT, "meta": _settled(meta),
                             "skipped": sorted(skipped),
                             "tops": {l: {k: v.cpu() for k, v in t.items()} for l, t in tops.items()},
                             "histograms": {l: activation_histogram.pack(h)
                                            for l, h in hists.items()},
                             "created": datetime.datetime.now().isoformat(timespec="seconds"),
                             **({"relevance_tops": {l: {k: v.cpu() for k, v in t.items()}
                                                    for l, t in rel_tops.items()}}
                                if ranker is not None else {})})
        if out is not None and rank_id == 0:
            result.save(out)
        if world > 1:
            dist.barrier()
        if partial and os.path.exists(partial):
            os.unlink(partial)
        return result
    finally:
        _release(lock)


def _gather(state, world: int):
    """The ranks' states merged: top-k by value, histograms by adding their counts."""
    if world == 1:
        return state["tops"], state["hists"], state["skipped"], state["rel_tops"]
    tops, rel_tops = _gather_tops(state["tops"], world), _gather_tops(state["rel_tops"], world)
    hists = {}
    for layer, hist in state["hists"].items():
        hist = hist.clone()
        dist.all_reduce(hist, op=dist.ReduceOp.SUM)  # integer counts: exact
        hists[layer] = hist
    skipped: List = [None] * world
    dist.all_gather_object(skipped, state["skipped"])
    return tops, hists, [s for part in skipped for s in part], rel_tops


def _gather_tops(state_tops, world: int):
    tops = {}
    for layer, t in state_tops.items():
        gathered = {}
        for key, value in t.items():
            parts = [torch.empty_like(value) for _ in range(world)]
            dist.all_gather(parts, value.contiguous())
            gathered[key] = torch.cat(parts, dim=1)
        channels, k = t["values"].shape
        tops[layer] = _merge(_empty_tops(channels, k, t["values"].device), gathered, k)
    return tops


def _claim(partial: Optional[str]) -> Optional[str]:
    """Take ``PARTIAL.lock`` for this process, so that two scans writing the same ``out``
    never share (and overwrite) one checkpoint; a lock left by a process that has ended is
    taken over."""
    if partial is None:
        return None
    lock = partial + ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(lock) as handle:
                    pid = int(handle.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise ArgumentError(f"another scan (process {pid}) is writing "
                                    f"{partial[:-len('.partial')]}; wait for it to end or "
                                    f"choose another --out") from None
            os.unlink(lock)  # left behind by a scan that has ended
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return lock
    raise ArgumentError(f"cannot take the scan lock {lock}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _release(lock: Optional[str]) -> None:
    if lock is not None and os.path.exists(lock):
        os.unlink(lock)


def _checkpoint_path(out, rank: int, world: int) -> Optional[str]:
    if out is None:
        return None
    base = os.fspath(out) + ".partial"
    return base if world == 1 else f"{base}.rank{rank}-of-{world}"


def _beside(fn, *args) -> Future:
    """``fn(*args)`` on a thread of its own, started now."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


def _settled(meta: dict) -> dict:
    """``meta`` with each value computed beside the scan waited for (in place)."""
    for key, value in meta.items():
        if isinstance(value, Future):
            meta[key] = value.result()
    return meta


def _save_checkpoint(path: str, meta: dict, state: dict) -> None:
    data = {"format": FORMAT, "meta": meta, "done": state["done"], "skipped": state["skipped"],
            "tops": {l: {k: v.cpu() for k, v in t.items()} for l, t in state["tops"].items()},
            "histograms": {l: activation_histogram.pack(h) for l, h in state["hists"].items()},
            "rel_tops": {l: {k: v.cpu() for k, v in t.items()}
                         for l, t in state["rel_tops"].items()}}
    write_atomically(path, lambda f: torch.save(data, f))


def _load_checkpoint(path: str, meta: dict, device) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=True)
    theirs = {**data["meta"], "format": data.get("format", "deconvviz-scan/1")}
    ours = {**meta, "format": FORMAT}
    if "precision" not in theirs:  # written before precision was recorded: the CPU's float32
        theirs["precision"] = "exact"
    differ = sorted(k for k in set(theirs) | set(ours)
                    if k not in ("versions", "device", "decoder")
                    and theirs.get(k) != ours.get(k))
    if differ:
        raise ArgumentError(f"checkpoint {path} is from a different scan ({', '.join(differ)} "
                            f"differ); delete it or drop --resume")
    return {"done": data["done"], "skipped": [tuple(s) for s in data["skipped"]],
            "decoder": data["meta"].get("decoder", "pillow"),
            "tops": {l: {k: v.to(device) for k, v in t.items()} for l, t in data["tops"].items()},
            "hists": {l: activation_histogram.unpack(h, device)
                      for l, h in data["histograms"].items()},
            "rel_tops": {l: {k: v.to(device) for k, v in t.items()}
                         for l, t in data.get("rel_tops", {}).items()}}
