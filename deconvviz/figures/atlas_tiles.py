"""The atlas's tiles: each hit's projection and image patch as a small JPEG or WebP file, and
a layer's thumbnails read back as one image (for Jupyter)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..errors import ArgumentError

__all__ = ["IMAGE_FORMATS", "MIN_TILE", "tile_path", "write_tile", "thumbnail_grid"]

IMAGE_FORMATS = ("jpg", "webp")
_QUALITY = {"jpg": cv2.IMWRITE_JPEG_QUALITY, "webp": cv2.IMWRITE_WEBP_QUALITY}
# Full-resolution colour: a projection's colours change from pixel to pixel, and JPEG's
# usual 4:2:0 subsampling put them 7 grey levels off on average (4:4:4: under 1 on conv1).
_SAMPLING = ([cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
             if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_444") else [])
MIN_TILE = 48  # smaller receptive fields are enlarged (nearest neighbour) before encoding


def tile_path(slug: str, unit: int, rank: int, kind: str, image_format: str = "jpg") -> str:
    """The file of a hit's tile (``kind``: ``projection`` or ``patch``), relative to the
    atlas's folder."""
    return f"{slug}/img/u{unit}_r{rank}_{kind}.{image_format}"


def write_tile(root: str, relative: str, rgb: np.ndarray, image_format: str = "jpg",
               quality: int = 88) -> int:
    """Encode an ``H x W x 3`` uint8 tile and write it under ``root``; returns its size in
    bytes. Fields smaller than :data:`MIN_TILE` are enlarged by an integer factor (nearest
    neighbour) so that the encoder's 8x8 blocks do not smear their pixels."""
    if image_format not in IMAGE_FORMATS:
        raise ArgumentError(f"unknown image format {image_format!r}; choose "
                            f"{', '.join(IMAGE_FORMATS)}")
    small = min(rgb.shape[:2])
    if small < MIN_TILE:
        factor = -(-MIN_TILE // max(small, 1))
        rgb = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    ok, data = cv2.imencode(f".{image_format}", np.ascontiguousarray(rgb[:, :, ::-1]),
                            [_QUALITY[image_format], quality]
                            + (_SAMPLING if image_format == "jpg" else []))
    if not ok:
        raise ArgumentError(f"cannot encode {relative} as {image_format}")
    with open(os.path.join(root, relative), "wb") as handle:
        handle.write(data.tobytes())
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
            tile = cv2.imread(os.path.join(root, tile_path(layer.slug, unit.index, 0,
                                                           "projection", image_format)))
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
