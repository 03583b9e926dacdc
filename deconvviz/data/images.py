"""Loading photos: decoding any common file, and the exact crop the network sees.

Decoding is Pillow's (JPEG, PNG in every mode, BMP, WebP, TIFF, CMYK JPEG), with the EXIF
orientation applied; resizing and cropping are torchvision's, as in the weights' own
``transforms()``, so ``rgb`` holds exactly the pixels that became ``x``.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn

from ..errors import ImageError
from .zoo import Preprocessing, get_spec, model_info

__all__ = ["load_image", "load_images", "image_list", "list_images", "decode_image", "image_size",
           "preprocessing_for", "normalise", "to_rgb", "IMAGE_EXTENSIONS", "ImagesArg",
           "SmallImageWarning"]

PathLike = Union[str, "os.PathLike[str]"]
# What every function that takes images takes (docs/api.md, "images"): a file, a folder, a
# text file listing paths, a PIL image, a normalised tensor [N, 3, H, W] or [3, H, W], or a
# list of any of these.
ImagesArg = Union[PathLike, Image.Image, Tensor, Sequence[Union[PathLike, Image.Image, Tensor]]]
# What a folder's images are; other files in it (a README, a .DS_Store) are skipped.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif",
                    ".ppm", ".pgm", ".pbm", ".pnm", ".jfif")
LIST_EXTENSIONS = (".txt", ".lst")
# A photo enlarged more than this to the model's input holds little it can see: a warning.
MAX_ENLARGEMENT = 8


class SmallImageWarning(UserWarning):
    """A photo much smaller than the model's input (enlarged more than 8 times)."""


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
    return preprocessing.normalise(crop.float() / 255.0).unsqueeze(0)


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
    if min(photo.size) * MAX_ENLARGEMENT < prep.resize_size:
        import warnings

        name = os.path.basename(os.fspath(path)) if not isinstance(path, Image.Image) \
            else "a PIL image"
        warnings.warn(f"{name} is {photo.size[0]}x{photo.size[1]} pixels: enlarged "
                      f"{prep.resize_size / min(photo.size):.0f} times to the model's "
                      f"{prep.resize_size}-pixel side, it holds little the model can see",
                      SmallImageWarning, stacklevel=2)
    image = TF.pil_to_tensor(photo)
    image = TF.resize(image, [prep.resize_size], antialias=True)
    crop = TF.center_crop(image, [prep.crop_size])
    rgb = crop.permute(1, 2, 0).contiguous().numpy()
    return normalise(crop, prep), rgb


def list_images(source: PathLike, skipped: Optional[List[str]] = None) -> List[str]:
    """The images of a folder (every non-hidden file with an image's extension, recursively,
    in sorted order; others are appended to ``skipped``), or the paths a text file lists, one
    per line (``#`` comments)."""
    from ..errors import ArgumentError

    source = os.fspath(source)
    if os.path.isdir(source):
        found, others = [], []
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.startswith("."):
                    continue
                path = os.path.join(root, f)
                (found if f.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
        if skipped is not None:
            skipped += others
        if not found:
            raise ArgumentError(f"no images in {source}" + (
                f" ({len(others)} other files; images end in "
                f"{', '.join(IMAGE_EXTENSIONS[:6])}, ...)" if others else ""))
        return found
    if os.path.isfile(source):
        with open(source, encoding="utf-8", errors="replace") as handle:
            lines = [l.strip() for l in handle]
        paths = [l for l in lines if l and not l.startswith("#")]
        if not paths:
            raise ArgumentError(f"{source} lists no image paths")
        return paths
    raise ArgumentError(f"image source not found: {source} (give an image, a folder or a text "
                        f"file of paths)")


def image_list(images: object, skipped: Optional[List[str]] = None) -> list:
    """Every form deconvviz takes images in (:data:`ImagesArg`), as one flat list of single
    images: file paths, ``PIL.Image`` objects and normalised tensors ``[3, H, W]``. A folder
    or a text file of paths (``.txt``, ``.lst``) gives its images; nothing is decoded.

    Raises:
        ArgumentError: another type, an empty list, a folder without images.
    """
    from ..errors import ArgumentError

    def expand(item, top: bool) -> list:
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if os.path.isdir(path) or (os.path.isfile(path)
                                       and path.lower().endswith(LIST_EXTENSIONS)):
                return list_images(path, skipped)
            return [path]
        if isinstance(item, Image.Image):
            return [item]
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Tensor) \
                and isinstance(item[1], np.ndarray):  # (x, rgb) as load_image returns it
            return expand(item[0], False)
        if isinstance(item, Tensor) and item.dim() in (3, 4):
            if not item.is_floating_point():
                raise ArgumentError(f"image tensors must be floating point (normalised), got "
                                    f"{item.dtype}; use deconvviz.load_image to prepare them")
            return list(item) if item.dim() == 4 else [item]
        if top and isinstance(item, (list, tuple)):
            out = [one for sub in item for one in expand(sub, False)]
            if not out:
                raise ArgumentError("images is an empty list; give a file path, a folder, a PIL "
                                    "image, a tensor [N, 3, H, W] or a list of them")
            return out
        raise ArgumentError(f"images must be a file path, a PIL image, a tensor [N, 3, H, W] "
                            f"or [3, H, W], a folder, or a list of them; got "
                            f"{type(item).__name__}")

    return expand(images, True)


def image_name(item: object, index: int) -> str:
    """How results name an image of :func:`image_list`: its path, else ``image K``."""
    return item if isinstance(item, str) else f"image {index}"


def load_images(images: object, model: Union[None, str, nn.Module] = None
                ) -> Tuple[Tensor, list, list]:
    """Any of the ways deconvviz takes photos (:data:`ImagesArg`, see :func:`image_list`), as
    one batch, preprocessed for ``model``.

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

    batches, photos, names = [], [], []
    for index, image in enumerate(image_list(images)):
        if isinstance(image, Tensor):
            x = image[None]
            batches.append(x)
            photos += to_rgb(x, model)
        else:
            x, rgb = load_image(image, model)
            batches.append(x)
            photos.append(rgb)
        names.append(image_name(image, index))
    sizes = {tuple(b.shape[1:]) for b in batches}
    if len(sizes) > 1:
        raise ArgumentError(f"the images have different sizes ({', '.join(map(str, sizes))}); "
                            f"give images of one size")
    device = batches[0].device
    return torch.cat([b.to(device) for b in batches]), photos, names


def to_rgb(x: Tensor, model: Union[None, str, nn.Module] = None) -> list:
    """Normalised images ``[N, 3, H, W]`` back to ``H x W x 3`` uint8 photos, undoing the
    model's normalisation (ImageNet's for models outside the zoo)."""

    photos = preprocessing_for(model).denormalise(x.detach().float().cpu()).clamp(0, 1)
    return [(p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for p in photos]
