"""Loading photos: decoding any common file, and the exact crop the network sees.

Decoding is Pillow's (JPEG, PNG in every mode, BMP, WebP, TIFF, CMYK JPEG), with the EXIF
orientation applied; resizing and cropping are torchvision's, as in the weights' own
``transforms()``, so ``rgb`` holds exactly the pixels that became ``x``.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple, Union

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn

from ..errors import ImageError
from .zoo import Preprocessing, get_spec, model_info

__all__ = ["load_image", "decode_image", "preprocessing_for", "normalise", "to_rgb"]

PathLike = Union[str, "os.PathLike[str]"]


def preprocessing_for(model: Union[None, str, nn.Module]) -> Preprocessing:
    """The preprocessing of a zoo name or zoo model; ImageNet's defaults for anything else."""
    if isinstance(model, str):
        weights = get_spec(model).weights_enum()
        return Preprocessing.from_weights(weights) if weights is not None else Preprocessing()
    info = model_info(model) if model is not None else None
    return info.preprocessing if info is not None else Preprocessing()


def decode_image(path: PathLike) -> Image.Image:
    """Open ``path`` as an 8-bit RGB Pillow image, upright per its EXIF orientation.

    Transparent pixels are composited on white; 16-bit images are scaled to 8 bits.

    Raises:
        ImageError: the file is missing, empty, truncated or not an image.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageError(f"image not found: {path}")
    if os.path.isdir(path):
        raise ImageError(f"{path} is a folder, not an image")
    if os.path.getsize(path) == 0:
        raise ImageError(f"image file is empty: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except UnidentifiedImageError:
        raise ImageError(f"not an image (or an unsupported format): {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode {path}: {exc}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def normalise(crop: Tensor, preprocessing: Preprocessing) -> Tensor:
    """uint8 ``[3, H, W]`` -> the normalised float ``[1, 3, H, W]`` the model expects."""
    x = TF.normalize(crop.float() / 255.0, list(preprocessing.mean), list(preprocessing.std))
    return x.unsqueeze(0)


def load_image(path: PathLike, model: Union[None, str, nn.Module] = None, *,
               preprocessing: Optional[Preprocessing] = None) -> Tuple[Tensor, np.ndarray]:
    """Load a photo as the model sees it.

    Args:
        path: an image file (JPEG, PNG, BMP, WebP, TIFF, ...), or a ``PIL.Image``.
        model: a zoo name or a model from :func:`load_model`, whose weights' preprocessing
            is used (resize the short side, centre-crop, normalise); ImageNet's defaults for
            other modules or ``None``.
        preprocessing: overrides the model's (e.g. ``Preprocessing(resize_size=227,
            crop_size=227)``).

    Returns:
        ``(x, rgb)``: ``x`` the normalised float tensor ``[1, 3, H, W]``, ``rgb`` the uint8
        ``H x W x 3`` crop it was made from.

    Raises:
        ImageError: the file is missing, empty, truncated or not an image.

    Examples:
        >>> x, rgb = load_image("examples/images/chelsea.png", "zfnet")
        >>> x.shape, rgb.shape
        (torch.Size([1, 3, 224, 224]), (224, 224, 3))
    """
    prep = preprocessing or preprocessing_for(model)
    photo = _to_rgb(ImageOps.exif_transpose(path)) if isinstance(path, Image.Image) \
        else decode_image(path)
    image = TF.pil_to_tensor(photo)
    image = TF.resize(image, [prep.resize_size], antialias=True)
    crop = TF.center_crop(image, [prep.crop_size])
    rgb = crop.permute(1, 2, 0).contiguous().numpy()
    return normalise(crop, prep), rgb


def to_rgb(x: Tensor, model: Union[None, str, nn.Module] = None) -> list:
    """Normalised images ``[N, 3, H, W]`` back to ``H x W x 3`` uint8 photos, undoing the
    model's normalisation (ImageNet's for models outside the zoo)."""
    import torch

    prep = preprocessing_for(model)
    mean = torch.tensor(prep.mean)[:, None, None]
    std = torch.tensor(prep.std)[:, None, None]
    photos = (x.detach().float().cpu() * std + mean).clamp(0, 1)
    return [(p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for p in photos]
