"""Loading photos: decoding any common file, and the exact crop the network sees.

Decoding is Pillow's (JPEG, PNG in every mode, BMP, WebP, TIFF, CMYK JPEG), with the EXIF
orientation applied; resizing and cropping are torchvision's, as in the weights' own
``transforms()``, so ``rgb`` holds exactly the pixels that became ``x``.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn

from ..errors import ImageError
from .zoo import Preprocessing, get_spec, model_info

__all__ = ["load_image", "load_images", "decode_image", "image_size", "preprocessing_for", "normalise", "to_rgb"]

PathLike = Union[str, "os.PathLike[str]"]
# What compare and sanity_check take: a path, a PIL image, a normalised tensor, or a list.
ImagesArg = Union[PathLike, Image.Image, Tensor, Sequence[Union[PathLike, Image.Image, Tensor]]]


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


def image_size(path: PathLike) -> Tuple[int, int]:
    """``(height, width)`` of an image file as :func:`decode_image` turns it upright, read
    from its header (the pixels are not decoded).

    Raises:
        ImageError: the file is missing or not an image.
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read {path}: {exc}") from None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


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


def load_images(images: object, model: Union[None, str, nn.Module] = None
                ) -> Tuple[Tensor, list, list]:
    """Any of the ways deconvviz takes photos, as one batch: a file path, a ``PIL.Image``,
    a list of either, or normalised tensors (``[N, 3, H, W]``, ``[3, H, W]``, or a list of
    them), as :func:`deconvviz.compare` and :func:`deconvviz.sanity_check` take them.

    Returns:
        ``(x, rgb, names)``: the normalised batch ``[N, 3, H, W]``, each image's uint8 crop
        (for a tensor, undone from its normalisation) and its name (the path; ``image K``
        for a PIL image or a tensor).

    Raises:
        ImageError: a file is missing or not an image.
        ArgumentError: something else than the above, or images of different sizes.
    """
    import torch

    from ..errors import ArgumentError

    if isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, Tensor) and images.dim() == 4):
        images = [images]
    elif isinstance(images, Tensor) and images.dim() == 3:
        images = [images[None]]
    if not isinstance(images, (list, tuple)) or not images:
        raise ArgumentError(f"images must be a file path, a PIL image, a tensor [N, 3, H, W] "
                            f"or a list of them; got {type(images).__name__}"
                            + (" (an empty list)" if isinstance(images, (list, tuple)) else ""))
    batches, photos, names = [], [], []
    for image in images:
        if isinstance(image, (str, os.PathLike)) or isinstance(image, Image.Image):
            x, rgb = load_image(image, model)
            batches.append(x)
            photos.append(rgb)
            names.append(os.fspath(image) if not isinstance(image, Image.Image)
                         else f"image {len(names)}")
        elif isinstance(image, Tensor) and image.dim() in (3, 4):
            x = image[None] if image.dim() == 3 else image
            if not x.is_floating_point():
                raise ArgumentError(f"image tensors must be floating point (normalised), got "
                                    f"{x.dtype}; use deconvviz.load_image to prepare them")
            batches.append(x)
            photos += to_rgb(x, model)
            names += [f"image {len(names) + k}" for k in range(x.shape[0])]
        else:
            raise ArgumentError(f"each image must be a file path, a PIL image or a tensor "
                                f"[N, 3, H, W]; got {type(image).__name__}")
    sizes = {tuple(b.shape[1:]) for b in batches}
    if len(sizes) > 1:
        raise ArgumentError(f"the images have different sizes ({', '.join(map(str, sizes))}); "
                            f"give images of one size")
    device = batches[0].device
    return torch.cat([b.to(device) for b in batches]), photos, names


def to_rgb(x: Tensor, model: Union[None, str, nn.Module] = None) -> list:
    """Normalised images ``[N, 3, H, W]`` back to ``H x W x 3`` uint8 photos, undoing the
    model's normalisation (ImageNet's for models outside the zoo)."""
    import torch

    prep = preprocessing_for(model)
    mean = torch.tensor(prep.mean)[:, None, None]
    std = torch.tensor(prep.std)[:, None, None]
    photos = (x.detach().float().cpu() * std + mean).clamp(0, 1)
    return [(p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for p in photos]
