"""The atlas's tiles: each hit's projection beside its image patch as one small JPEG or WebP
file, and a layer's thumbnails read back as one image (for Jupyter)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..errors import ArgumentError

__all__ = ["IMAGE_FORMATS", "MIN_TILE", "GUTTER", "tile_path", "pair_halves", "write_pair",
           "thumbnail_grid"]

IMAGE_FORMATS = ("jpg", "webp")
_QUALITY = {"jpg": cv2.IMWRITE_JPEG_QUALITY, "webp": cv2.IMWRITE_WEBP_QUALITY}
# Full-resolution colour: a projection's colours change from pixel to pixel, and JPEG's
# usual 4:2:0 subsampling put them 7 grey levels off on average (4:4:4: under 1 on conv1).
_SAMPLING = ([cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
             if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_444") else [])
MIN_TILE = 48  # smaller receptive fields are enlarged (nearest neighbour) before encoding
GUTTER = 4  # white pixels between a hit's projection and its patch


def tile_path(slug: str, unit: int, rank: int, image_format: str = "jpg") -> str:
    """The file of a hit's pair (its projection, then its image patch), relative to the
    atlas's folder."""
    return f"{slug}/img/u{unit}_r{rank}.{image_format}"


def pair_halves(pair: np.ndarray):
    """The projection and the patch of a decoded pair (``H x (2W + GUTTER) x 3``)."""
    width = (pair.shape[1] - GUTTER) // 2
    return pair[:, :width], pair[:, width + GUTTER:]


def write_pair(root: str, relative: str, projection: np.ndarray, patch: np.ndarray,
               image_format: str = "jpg", quality: int = 88) -> int:
    """Encode a hit's projection and patch (``H x W x 3`` uint8 each) side by side, with a
    white gutter of :data:`GUTTER` pixels, as one image under ``root``; returns its size in
    bytes. One file per hit: half the files to write, zip and serve. Fields smaller than
    :data:`MIN_TILE` are enlarged by an integer factor (nearest neighbour), so that the
    encoder's 8x8 blocks do not smear their pixels."""
    factor = _enlargement(projection)
    tiles = [_enlarged(t, factor) for t in (projection, patch)]
    gutter = np.full((tiles[0].shape[0], GUTTER, 3), 255, np.uint8)
    return _write(root, relative, np.concatenate([tiles[0], gutter, tiles[1]], axis=1),
                  image_format, quality)


def relevance_tile_path(slug: str, unit: int, rank: int, image_format: str = "jpg") -> str:
    """The file of a unit's relevance-maximising hit (its image patch), relative to the
    atlas's folder."""
    return f"{slug}/img/u{unit}_rel{rank}.{image_format}"


def write_tile(root: str, relative: str, patch: np.ndarray, image_format: str = "jpg",
               quality: int = 88) -> int:
    """Encode one image patch (``H x W x 3`` uint8) under ``root``, enlarged as
    :func:`write_pair` enlarges small fields; returns its size in bytes."""
    return _write(root, relative, _enlarged(patch, _enlargement(patch)), image_format,
                  quality)


def _enlargement(tile: np.ndarray) -> int:
    """The integer factor that brings a field's short side to :data:`MIN_TILE` (1 if it is
    that big already)."""
    small = min(tile.shape[:2])
    return -(-MIN_TILE // max(small, 1)) if small < MIN_TILE else 1


def _enlarged(tile: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return tile
    return cv2.resize(tile, (tile.shape[1] * factor, tile.shape[0] * factor),
                      interpolation=cv2.INTER_NEAREST)


def _write(root: str, relative: str, rgb: np.ndarray, image_format: str, quality: int) -> int:
    """Encode an RGB image as ``image_format`` and write it under ``root``; its size."""
    if image_format not in IMAGE_FORMATS:
        raise ArgumentError(f"unknown image format {image_format!r}; choose "
                            f"{', '.join(IMAGE_FORMATS)}")
    ok, data = cv2.imencode(f".{image_format}", np.ascontiguousarray(rgb[:, :, ::-1]),
                            [_QUALITY[image_format], quality]
                            + (_SAMPLING if image_format == "jpg" else []))
    if not ok:
        raise ArgumentError(f"cannot encode {relative} as {image_format}")
    with open(os.path.join(root, relative), "wb") as handle:
        handle.write(data)
    return len(data)


def thumbnail_grid(root: str, layer, image_format: str, *, count: int = 64,
                   columns: int = 16, size: int = 48) -> np.ndarray:
    """The first ``count`` units of ``layer`` (a :class:`~.atlas_site.SiteLayer`) as one
    uint8 image (read back from the site):
    each unit's strongest projection, a grey square for a unit that never fired."""
    tiles = []
    for unit in layer.units[:count]:
        tile = None
        if unit.hits:
            pair = cv2.imread(os.path.join(root, tile_path(layer.slug, unit.index, 0,
                                                           image_format)))
            tile = None if pair is None else pair_halves(pair)[0]
        tiles.append(cv2.resize(tile[:, :, ::-1], (size, size), interpolation=cv2.INTER_AREA)
                     if tile is not None else np.full((size, size, 3), 225, np.uint8))
    rows = max(1, -(-len(tiles) // columns))
    gutter = 2
    out = np.full((rows * (size + gutter) - gutter, columns * (size + gutter) - gutter, 3), 255,
                  np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (size + gutter):r * (size + gutter) + size,
            c * (size + gutter):c * (size + gutter) + size] = tile
    return out
