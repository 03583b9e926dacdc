"""Training images read at a GPU's speed: JPEGs decoded in batches on the GPU and augmented
there, each image's augmentation the one the CPU's path would draw.

The loader's workers hand over a JPEG's bytes with its augmentation's parameters: the crop's
corner and the flip, drawn by the training transform's own random crop and flip under the
image's own seed (:class:`~deconvviz.training.recipe._Augmented`'s, by seed, epoch and
image), applied to a map of pixel coordinates of the resized image's size, so the draws are
those of the CPU's path by construction. The main process decodes the batch on the GPU
(:mod:`deconvviz.data.jpeg_batches`), resizes each image (antialiased), crops, flips, scales
and normalises with the same torchvision functions as the CPU's transform. Files the GPU
cannot decode as Pillow would (PNG, CMYK, EXIF-rotated) go the CPU's way in the workers.

On the CPU (forced, in the tests) both ways give identical batches: both decoders are
libjpeg-turbo. On a GPU, nvJPEG and the GPU's resize differ by a few grey levels (not yet
measured).
"""
from __future__ import annotations

from typing import Iterator, List, Tuple

import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as F2
from torch import Tensor
from torch.utils.data import Dataset

from ..data import jpeg_batches
from ..data.prefetch import one_ahead
from ..data.zoo import Preprocessing

__all__ = ["EncodedImages", "collate", "batches_on"]

_RAW = "jpeg"


class EncodedImages(Dataset):
    """An ``_Augmented`` dataset whose JPEGs come as bytes and augmentation parameters."""

    def __init__(self, augmented) -> None:
        self.augmented = augmented

    @property
    def epoch(self) -> int:
        return self.augmented.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.augmented.epoch = value

    def __len__(self) -> int:
        return len(self.augmented)

    def __getitem__(self, i: int):
        path, target = self.augmented.folder.samples[i]
        if not jpeg_batches.gpu_decodable(path):
            x, target = self.augmented[i]
            return x, target, None
        from PIL import Image

        with Image.open(path) as img:
            width, height = img.size
        transform = self.augmented.transform.transforms
        resize, crop = transform[1], transform[2]
        h, w = TF._compute_resized_output_size((height, width), list(_sizes(resize.size)),
                                               resize.max_size)
        coordinates = torch.arange(h * w, dtype=torch.int32).view(1, h, w)
        from .recipe import _mix

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.augmented.seed, self.augmented.epoch, i))
            seen = crop(coordinates)  # the same draws as the CPU's transform
        first = int(seen[0, 0, 0])
        flipped = seen.shape[-1] > 1 and int(seen[0, 0, 1]) < first
        top, left = first // w, first % w - (seen.shape[-1] - 1 if flipped else 0)
        return jpeg_batches.read_jpeg(path), target, (_RAW, top, left, flipped, path)


def _sizes(size) -> List[int]:
    return [size] if isinstance(size, int) else list(size)


def collate(items):
    """The items as they are, their JPEG bytes packed into one buffer
    (:func:`~deconvviz.data.jpeg_batches.pack`: one shared-memory file a batch, not one a
    JPEG); tensors, bytes and parameters are put together on the device (:func:`batches_on`)."""
    raw = [(i, value) for i, (value, _, how) in enumerate(items) if how is not None]
    kept = [(None, target, how) if how is not None else (value, target, how)
            for value, target, how in items]
    return kept, jpeg_batches.pack(raw)


def _unpacked(batch):
    items, packed = batch
    items = list(items)
    for i, data in jpeg_batches.unpack(packed):
        items[i] = (data,) + tuple(items[i][1:])
    return items


def _decoded(items, raw: List[int], device) -> List[Tensor]:
    """The JPEGs decoded on ``device``, a batch at once; one the GPU refuses, by Pillow (whose
    error, naming the file, is the CPU's path's too)."""
    from ..data.images import decode_image

    decoded = jpeg_batches.decode_on([items[i][0] for i in raw], device)
    # refused by the GPU: Pillow (raises ImageError naming the file)
    return [image if image is not None
            else TF.pil_to_tensor(decode_image(items[i][2][4])).to(device)
            for i, image in zip(raw, decoded)]


def _decode(batch, device, prep: Preprocessing, crop: int) -> Tuple[Tensor, Tensor]:
    items = _unpacked(batch)
    raw = [i for i, (_, _, how) in enumerate(items) if how is not None]
    images = _decoded(items, raw, device) if raw else []
    rows: List[Tensor] = [None] * len(items)  # type: ignore[list-item]
    for i, image in zip(raw, images):
        _, top, left, flipped, _ = items[i][2]
        image = F2.resize(image, [prep.resize_size], antialias=True)
        image = image[:, top:top + crop, left:left + crop]
        rows[i] = image.flip(-1) if flipped else image
    if raw:
        x = F2.to_dtype(torch.stack([rows[i] for i in raw]), torch.float32, scale=True)
        x = prep.normalise(x)
        for k, i in enumerate(raw):
            rows[i] = x[k]
    for i, (value, _, how) in enumerate(items):
        if how is None:
            rows[i] = value.to(device, non_blocking=True)
    targets = torch.tensor([target for _, target, _ in items])
    return torch.stack(rows), targets


def batches_on(loader, device, prep: Preprocessing) -> Iterator[Tuple[Tensor, Tensor]]:
    """``(x, y)`` on ``device`` for each batch of ``loader`` (made with :func:`collate`),
    the next batch decoded before the current one is handed on."""
    return one_ahead(loader, lambda items: _decode(items, device, prep, prep.crop_size))
