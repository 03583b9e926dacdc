"""Reading a scan's images: a ``Dataset`` of every form the glossary takes (paths decoded by
Pillow in the workers, or handed over as JPEG bytes for the GPU to decode a batch at a time;
PIL images and tensors as they are), and each batch put on the device."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from ..data import jpeg_batches
from ..data.images import load_image
from ..data.zoo import Preprocessing
from ..errors import DeconvvizError

__all__ = ["ScanImages", "collate", "on_device"]


class ScanImages(Dataset):
    """Each image as the model's input; with ``gpu``, a JPEG the GPU can decode as its bytes
    (:mod:`deconvviz.data.jpeg_batches`), decoded there a batch at a time. ``items`` are the
    paths, PIL images and normalised ``[3, H, W]`` tensors of
    :func:`deconvviz.data.images.image_list`."""

    def __init__(self, items: Sequence[object], indices: Sequence[int], prep: Preprocessing,
                 gpu: bool = False):
        self.items, self.indices, self.prep, self.gpu = items, list(indices), prep, gpu

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        path = self.items[index]
        if isinstance(path, torch.Tensor):
            return index, path.detach().float().cpu(), ""
        if self.gpu and isinstance(path, str) and jpeg_batches.gpu_decodable(path):
            return index, jpeg_batches.read_jpeg(path), _RAW
        try:
            x, _ = load_image(path, preprocessing=self.prep)
            return index, x[0], ""
        except DeconvvizError as exc:
            return index, None, str(exc)


_RAW = "jpeg bytes"


def collate(batch):
    """A loader's batch: CPU-decoded images stacked, JPEG bytes packed into one buffer
    (a worker hands each tensor over through its own shared-memory file: with one tensor a
    JPEG, a VGG16 scan on an H200 read 544 images/s, with one buffer a batch 661)."""
    good = [(i, x) for i, x, why in batch if x is not None and why != _RAW]
    raw = jpeg_batches.pack([(i, data) for i, data, why in batch if why == _RAW])
    failed = [(i, why) for i, x, why in batch if x is None]
    if not good:
        return [], None, failed, raw
    return [i for i, _ in good], torch.stack([x for _, x in good]), failed, raw


def on_device(batch, device, paths: Sequence[str], prep: Preprocessing):
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
