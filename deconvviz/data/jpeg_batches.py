"""Reading JPEGs at a GPU's speed: the loader's workers read each JPEG's bytes, the GPU
decodes a whole batch at once (nvJPEG, ``torchvision.io.decode_jpeg(list, device="cuda")``)
and resizes, crops and normalises it there, with the same torchvision functions as
:func:`~deconvviz.data.images.load_image` (``resize`` with antialiasing, ``center_crop``,
``normalize``) applied to tensors.

Only what the GPU decodes as Pillow would goes this way: baseline or progressive JPEGs in RGB
or greyscale, without an EXIF rotation (nvJPEG does not apply it). Every other file (PNG,
CMYK JPEGs, rotated photos, a JPEG nvJPEG refuses) takes the CPU path of
:func:`load_image`, image by image. On the CPU, scans keep the CPU path throughout.

The two paths differ only as two JPEG decoders (and two resize kernels) do. On the CPU, where
torchvision and Pillow both decode with libjpeg-turbo, this module's tensor path gives the
same crops as Pillow's, to the grey level (measured on the bundled JPEGs and baseline,
progressive and greyscale re-encodings: ``tests/test_jpeg_batches.py``). nvJPEG's IDCT and the
GPU's float resize may differ by a few grey levels; ``tests/test_gpu.py`` holds them to
``GPU_JPEG_LEVELS`` (not yet run on a GPU).
"""
from __future__ import annotations

import os
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from .images import load_image
from .zoo import Preprocessing

__all__ = ["gpu_decodable", "read_jpeg", "preprocess", "decode_batch", "pack", "unpack"]

_JPEG = b"\xff\xd8\xff"


def gpu_decodable(path: str) -> bool:
    """Whether ``path`` is a JPEG that a GPU decodes as Pillow would: RGB or greyscale, no
    EXIF rotation. Reads the header only."""
    from PIL import Image

    try:
        with open(path, "rb") as handle:
            if handle.read(3) != _JPEG:
                return False
        with Image.open(path) as img:
            return (img.format == "JPEG" and img.mode in ("RGB", "L")
                    and img.getexif().get(0x0112, 1) == 1)
    except (OSError, SyntaxError, ValueError):
        return False  # the CPU path reports what is wrong with it


def read_jpeg(path: str) -> Tensor:
    """The file's bytes as a 1-D uint8 tensor (what ``decode_jpeg`` takes)."""
    with open(path, "rb") as handle:
        data = handle.read()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def pack(items: Sequence[Tuple[object, Tensor]]) -> Tuple[list, Tensor, List[int]]:
    """``(key, bytes)`` pairs as one buffer: ``(keys, buffer, sizes)``. A loader's worker
    hands each tensor over through its own shared-memory file, and the pin-memory thread pins
    each separately: one buffer a batch, not one per JPEG."""
    keys = [key for key, _ in items]
    sizes = [int(data.numel()) for _, data in items]
    buffer = torch.cat([data for _, data in items]) if items else torch.empty(0, dtype=torch.uint8)
    return keys, buffer, sizes


def unpack(packed: Tuple[list, Tensor, List[int]]) -> List[Tuple[object, Tensor]]:
    """The ``(key, bytes)`` pairs of :func:`pack` (views into its buffer, not copies)."""
    keys, buffer, sizes = packed
    return list(zip(keys, torch.split(buffer, sizes))) if keys else []


def preprocess(image: Tensor, prep: Preprocessing) -> Tensor:
    """A decoded uint8 ``[3, H, W]`` photo -> its uint8 crop ``[3, c, c]``: resize the short
    side (antialiased), centre-crop, as :func:`load_image` does, on the image's device."""
    image = TF.resize(image, [prep.resize_size], antialias=True)
    return TF.center_crop(image, [prep.crop_size])


def normalise_batch(crops: Tensor, prep: Preprocessing) -> Tensor:
    """uint8 crops ``[B, 3, c, c]`` -> normalised float32, on their device."""
    return prep.normalise(crops.float() / 255.0)


def _decode(datas: List[Tensor], device) -> List[Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec
        warnings.simplefilter("ignore")
        return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)


def decode_on(datas: List[Tensor], device) -> List[Optional[Tensor]]:
    """JPEG bytes decoded on ``device`` (uint8 ``[3, H, W]``), the whole batch at once; a
    batch the decoder refuses is decoded image by image, and an image it refuses is ``None``
    (the caller's fallback: Pillow on the CPU). The one place the GPU decoder's refusals are
    handled."""
    try:
        return list(_decode(datas, device))
    except RuntimeError:
        images: List[Optional[Tensor]] = []
        for data in datas:
            try:
                images.append(_decode([data], device)[0])
            except RuntimeError:
                images.append(None)
        return images


def decode_batch(datas: Sequence[Tensor], paths: Sequence[str], prep: Preprocessing,
                 device) -> Tuple[Tensor, List[int], List[Tuple[int, str]]]:
    """Decode and preprocess a batch of JPEG bytes on ``device``.

    Returns:
        ``(x, kept, failed)``: the normalised ``[B', 3, c, c]`` images on ``device``, the
        positions in ``datas`` they come from, and ``(position, reason)`` of the files no
        decoder could read. A batch the GPU refuses as a whole is decoded image by image;
        an image it refuses goes through :func:`load_image` on the CPU.
    """
    images = decode_on(list(datas), device)
    crops, kept, failed = [], [], []
    for i, image in enumerate(images):
        if image is not None:
            crops.append(preprocess(image, prep))
            kept.append(i)
            continue
        try:  # the CPU path: its own decoder, and its error message when it fails too
            x, _ = load_image(paths[i], preprocessing=prep)
        except ValueError as exc:
            failed.append((i, str(exc)))
            continue
        crops.append(x[0].to(device))
        kept.append(i)
    if not crops:
        return torch.empty(0, 3, prep.crop_size, prep.crop_size, device=device), kept, failed
    uint8 = [c for c in crops if c.dtype == torch.uint8]
    x = normalise_batch(torch.stack(uint8), prep) if uint8 else None
    if len(uint8) == len(crops):
        return x, kept, failed
    # a few images took the CPU path (already normalised floats): put each in its place
    out, u = [], 0
    for c in crops:
        if c.dtype == torch.uint8:
            out.append(x[u])
            u += 1
        else:
            out.append(c)
    return torch.stack(out), kept, failed


def on_gpu(device) -> bool:
    """Whether scans and training on ``device`` decode JPEGs there (CUDA, unless
    ``DECONVVIZ_GPU_DECODE=0``)."""
    return (torch.device(device).type == "cuda"
            and os.environ.get("DECONVVIZ_GPU_DECODE", "1") != "0")
