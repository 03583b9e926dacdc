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
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from .._io import check_output_path
from .._progress import ProgressArg, progress_bar
from .._signatures import api
from ..choices import check_relevance_options
from ..data import jpeg_batches
from ..data.devices import model_device
from ..data.images import ImagesArg, image_list, image_name, load_image, preprocessing_for
from ..data.prefetch import one_ahead
from ..data.zoo import Preprocessing, model_info, model_name, weights_digest
from ..engine.guard import runs_model
from ..engine.passes.graph import trace
from ..engine.passes.layers import aliases_of, resolve_layer
from ..engine.passes.recording import forward_to
from ..engine.precision import current_precision
from ..errors import ArgumentError, ImageError, Interrupted
from . import activation_histogram
from .relevance_scan import RANKS, RelevanceRanker
from .scan_checkpoint import (
    beside,
    checkpoint_path,
    claim,
    load_checkpoint,
    release,
    save_checkpoint,
    settled,
)
from .scan_distributed import distributed, gather
from .scan_loading import ScanImages, collate, on_device
from .scan_result import FORMAT, ScanResult, write_scan
from .scan_tops import candidates, empty_tops, merge

__all__ = ["scan", "ScanInterrupted", "ResumeWarning"]

class ScanInterrupted(Interrupted):
    """The scan stopped early (Ctrl-C); its checkpoint lets ``resume=True`` continue."""


class ResumeWarning(UserWarning):
    """``resume=True`` found no checkpoint: the scan starts from the first image."""


def _stored_weights(weights: str) -> str:
    """A checkpoint's path as a scan stores it: absolute, so the scan opens anywhere."""
    if weights in ("imagenet", "random", "pretrained", "user"):
        return weights
    return os.path.abspath(weights)


def _versions() -> Dict[str, str]:
    """The versions a scan was made with (read from the modules themselves, so that a
    checkout on ``PYTHONPATH``, not installed, is described too)."""
    import torchvision

    from .._version import __version__

    return {"deconvviz": str(__version__), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__)}


@api(renamed={"source": "images", "top": "hits"}, legacy=("layers",))
@runs_model
def scan(model: nn.Module, images: ImagesArg, *, layers: Sequence[str], hits: int = 9,
         batch_size: int = 32, workers: int = 0,
         out: Optional[Union[str, os.PathLike]] = None, resume: bool = False,
         checkpoint_every: int = 256, progress: ProgressArg = True,
         preprocessing: Optional[Preprocessing] = None, rank: str = "activation",
         relevance_target: Optional[int] = None, relevance_method: str = "lrp",
         device: Optional[str] = None, precision: Optional[str] = None) -> ScanResult:
    """Scan a collection of images for the strongest activations of every feature.

    Args:
        model: the network (zoo model or any traceable CNN).
        images: any form of the glossary (docs/api.md): a folder (recursive; files that are
            not images are skipped, listed in ``result.data["not_images"]``), a text file
            listing image paths, a list of paths, PIL images or tensors. Paths are stored
            absolute (as a checkpoint's path is), so that the scan opens from any working
            folder; PIL images and tensors are kept inside the result (``image K``).
        layers: layer names (aliases or module paths).
        hits: hits kept per feature.
        batch_size: images per batch (the ``DataLoader``'s).
        workers: ``DataLoader`` worker processes.
        out: where to save the result; checkpoints go beside it (``OUT.partial``).
        resume: continue from ``OUT.partial`` if present (if not, a :class:`ResumeWarning`
            says so and the scan starts from the first image).
        checkpoint_every: images between checkpoints.
        progress: ``True`` (a bar on stderr, images/s), ``False``, or ``progress(done,
            total, label)``.
        preprocessing: overrides the model's preprocessing.
        rank: ``"relevance"`` also keeps each unit's top images by its relevance for each
            image's predicted class (relevance maximisation, :mod:`.relevance_scan`).
        relevance_target: the class whose relevance ranks them (default: each image's
            predicted class); the LRP method (default ``lrp``).
        relevance_method: the LRP method (default ``lrp``).
        device: as everywhere (docs/api.md); recorded with the device's type.
        precision: ``"exact"`` or ``"tf32"`` (docs/api.md).

    Returns:
        A :class:`ScanResult` (also saved to ``out`` when given).

    Examples:
        >>> result = scan(load_model("zfnet", weights=None), "photos/", layers=["conv5"])
        >>> result.hits("conv5", 12)[0]
        Hit(value=..., image='/home/me/photos/cat.jpg', y=6, x=4)
    """
    return _scan(**locals())


def _scan(model, images, *, layers, hits, batch_size, workers, out, resume, checkpoint_every,
          progress, preprocessing, rank, relevance_target, relevance_method, device,
          precision) -> ScanResult:
    layers = _check_arguments(hits, batch_size, workers, checkpoint_every, layers, rank, out)
    check_relevance_options(rank, relevance_target, relevance_method)
    not_images: List[str] = []
    items = [os.path.abspath(i) if isinstance(i, str) else i
             for i in image_list(images, not_images)]
    names = [image_name(item, k) for k, item in enumerate(items)]
    meta, forward, probe, device = _describe(model, names, layers, hits, preprocessing)
    ranker = (RelevanceRanker(model, layers, relevance_target, relevance_method)
              if rank == "relevance" else None)
    meta.update({"relevance": ranker.meta()} if ranker is not None else {})
    rank_id, world = distributed()
    # At most one hit per image: memory and file size follow the hits that can be kept.
    keep = max(1, min(hits, len(items)))
    shard = list(range(rank_id, len(items), world))
    state = _empty_state(layers, probe, keep, device, ranker is not None)
    partial = checkpoint_path(out, rank_id, world)
    lock = claim(partial)
    try:
        if resume and partial and os.path.exists(partial):
            state = load_checkpoint(partial, settled(meta), device)
            if state.pop("decoder", meta["decoder"]) != meta["decoder"]:
                meta["decoder"] = "mixed"  # resumed on another device
        elif resume and partial and rank_id == 0:
            warnings.warn(f"no checkpoint to resume from ({partial} does not exist): "
                          f"scanning from the start", ResumeWarning, stacklevel=2)
        prep = Preprocessing.from_dict(meta["preprocessing"])
        loader = DataLoader(ScanImages(items, shard[state["done"]:], prep,
                                       gpu=jpeg_batches.on_gpu(device)),
                            batch_size=batch_size, num_workers=workers, collate_fn=collate,
                            pin_memory=device.type == "cuda")
        batches = one_ahead(loader, lambda b: on_device(b, device, items, prep))
        bar = progress_bar(progress if rank_id == 0 else False, total=len(shard),
                           initial=state["done"], unit="img", desc=f"scan {meta['model']}")
        state = _run(batches, forward, layers, keep, ranker, device, state, bar,
                     (partial, meta, checkpoint_every), len(shard))
        return _finish(state, world, rank_id, items, names, meta, partial, out, ranker,
                       not_images)
    finally:
        release(lock)


def _check_arguments(hits, batch_size, workers, checkpoint_every, layers, rank, out
                     ) -> List[str]:
    if not isinstance(hits, int) or hits < 1:
        raise ArgumentError(f"hits must be a positive number of hits per feature, got "
                            f"{hits!r}")
    if batch_size < 1 or workers < 0 or checkpoint_every < 1:
        raise ArgumentError("batch size and checkpoint interval must be >= 1, workers >= 0")
    layers = list(layers)
    if not layers:
        raise ArgumentError("no layers to scan")
    if rank not in RANKS:
        raise ArgumentError(f"rank is one of {', '.join(RANKS)}, got {rank!r}")
    if out is not None:  # before any work: a scan must not end in an unwritable folder
        check_output_path(os.fspath(out), formats=None)
    return layers


def _describe(model: nn.Module, names: List[str], layers: List[str], hits: int,
              preprocessing: Optional[Preprocessing]):
    """What a scan records of itself (``meta``), the forward pass to its layers, their
    shapes (a probe of two blank images) and the device."""
    traced = trace(model)
    aliases = aliases_of(model)
    resolved = [resolve_layer(traced, layer, aliases) for layer in layers]
    prep = preprocessing or preprocessing_for(model)
    info = model_info(model)
    device = model_device(model)
    forward = forward_to(traced, [node for _, _, node in resolved],
                         (prep.crop_size, prep.crop_size))
    with torch.no_grad():
        probe = forward(torch.zeros(2, 3, prep.crop_size, prep.crop_size, device=device))
    meta = {
        "model": model_name(model),
        "weights": _stored_weights(info.weights) if info else "user",
        # hashed beside the scan (hashlib and the copy off a GPU let other threads run): a
        # VGG16's 553 MB take 0.32 s on this project's CPU, a tenth of a 2,048-image scan's
        # 3.1 s on an H200
        "weights_digest": beside(weights_digest, model),
        "layers": [{"name": l, "path": p, "shape": list(a.shape[1:])}
                   for l, (_, p, _), a in zip(layers, resolved, probe)],
        "preprocessing": prep.to_dict(),
        "images": names, "top": hits, "versions": _versions(),
        # what computed the values: a resumed scan keeps its precision, may change device
        "precision": current_precision(), "device": device.type,
        # who decoded the JPEGs: nvJPEG's pixels differ from Pillow's by a few grey levels
        "decoder": "nvjpeg" if jpeg_batches.on_gpu(device) else "pillow",
    }
    return meta, forward, probe, device


def _empty_state(layers, probe, keep: int, device, relevance: bool) -> dict:
    return {"done": 0, "skipped": [],
            "tops": {l: empty_tops(a.shape[1], keep, device) for l, a in zip(layers, probe)},
            "hists": {l: activation_histogram.empty(a.shape[1], device)
                      for l, a in zip(layers, probe)},
            "rel_tops": {l: empty_tops(a.shape[1], keep, device)
                         for l, a in zip(layers, probe)} if relevance else {}}


def _run(batches, forward, layers, keep, ranker, device, state, bar, checkpointing,
         shard_size: int) -> dict:
    """The scan's loop: each batch's candidates merged into the running state, checkpointed
    every ``checkpoint_every`` images and on Ctrl-C."""
    partial, meta, checkpoint_every = checkpointing
    since = 0
    try:
        for indices, x, failed in batches:
            tops, hists, rel_tops = state["tops"], state["hists"], state["rel_tops"]
            if x is not None:
                with torch.no_grad():
                    acts = forward(x)
                ids = torch.tensor(indices)
                found = {layer: candidates(act, ids) for layer, act in zip(layers, acts)}
                tops = {layer: merge(tops[layer], found[layer], k=keep) for layer in layers}
                hists = {layer: activation_histogram.accumulate(hists[layer],
                                                                found[layer]["strongest"])
                         for layer in layers}
                if ranker is not None:  # one batched relevance pass
                    found = ranker.candidates(x.to(device), ids)
                    rel_tops = {layer: merge(rel_tops[layer], found[layer], k=keep)
                                for layer in layers}
            # The batch counts only once all of it is merged, so an interruption never
            # leaves half a batch in the state.
            n = len(indices) + len(failed)
            state = {"tops": tops, "hists": hists, "done": state["done"] + n,
                     "skipped": state["skipped"] + failed, "rel_tops": rel_tops}
            since += n
            bar.update(n)
            if partial and since >= checkpoint_every:
                save_checkpoint(partial, settled(meta), state)
                since = 0
    except KeyboardInterrupt:
        if partial:
            save_checkpoint(partial, settled(meta), state)
            raise ScanInterrupted(f"interrupted after {state['done']} of {shard_size} images; "
                                  f"run again with --resume to continue") from None
        raise
    finally:
        bar.close()
    return state


def _finish(state, world, rank_id, items, names, meta, partial, out, ranker, not_images
            ) -> ScanResult:
    """The ranks' states merged into the result, saved to ``out``; the checkpoint removed."""
    tops, hists, skipped, rel_tops = gather(state, world)
    if items and len(skipped) == len(items):
        index, why = min(skipped)
        if partial and os.path.exists(partial):
            os.unlink(partial)
        raise ImageError(f"no readable image: all {len(items)} file(s) were skipped; the "
                         f"first, {names[index]}: {why}")
    inline = {name: item for name, item in zip(names, items) if not isinstance(item, str)}
    result = ScanResult({"format": FORMAT, "meta": settled(meta),
                         "skipped": sorted(skipped),
                         "tops": {l: {k: v.cpu() for k, v in t.items()}
                                  for l, t in tops.items()},
                         "histograms": {l: activation_histogram.pack(h)
                                        for l, h in hists.items()},
                         "created": datetime.datetime.now().isoformat(timespec="seconds"),
                         **({"relevance_tops": {l: {k: v.cpu() for k, v in t.items()}
                                                for l, t in rel_tops.items()}}
                            if ranker is not None else {}),
                         **({"inline_images": _inline(inline, meta)} if inline else {}),
                         **({"not_images": not_images} if not_images else {})})
    if out is not None and rank_id == 0:
        write_scan(result, out)
    if world > 1:
        dist.barrier()
    if partial and os.path.exists(partial):
        os.unlink(partial)
    return result


def _inline(images: dict, meta: dict) -> dict:
    """In-memory images as the scan saw them (normalised ``[3, H, W]``), so that its figures
    can draw them: a PIL image preprocessed, a tensor as given."""
    prep = Preprocessing.from_dict(meta["preprocessing"])
    return {name: (item.detach().float().cpu() if isinstance(item, torch.Tensor)
                   else load_image(item, preprocessing=prep)[0][0])
            for name, item in images.items()}
