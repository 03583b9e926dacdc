"""Object boxes for the localisation metrics: Pascal VOC XML and COCO JSON, read into each
image's boxes in the pixels the model sees, and rasterised to masks.

A box is ``(x0, y0, x1, y1, name)`` in continuous pixel coordinates (``x1``, ``y1``
exclusive: a box over the whole of a ``W x H`` image is ``(0, 0, W, H)``). VOC's corners are
1-based and inclusive (``xmin=1, xmax=W`` is the whole width): they become ``(xmin - 1,
ymin - 1, xmax, ymax)``. COCO's ``bbox`` is ``[x, y, width, height]`` from the top-left
corner: ``(x, y, x + width, y + height)``.

:func:`read_boxes` scales them to the model's input exactly as :func:`deconvviz.data.images
.load_image` resizes a photo (the short side to ``resize_size``, then the centre crop of
``crop_size``), and clips them to the crop; a box the crop leaves out is dropped. Every
problem is an :class:`~deconvviz.errors.ArgumentError` naming it: a missing file, a box
outside its image, an image without a box.
"""
from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ArgumentError
from .zoo import Preprocessing

__all__ = ["Box", "read_boxes", "read_voc", "read_coco", "to_model_pixels", "box_masks",
           "check_boxes"]

Box = Tuple[float, float, float, float, str]  # x0, y0, x1, y1 (exclusive), class name


def _number(node: ET.Element, tag: str, where: str) -> float:
    found = node.find(tag)
    if found is None or found.text is None:
        raise ArgumentError(f"{where}: a box has no <{tag}>")
    try:
        return float(found.text)
    except ValueError:
        raise ArgumentError(f"{where}: <{tag}> is {found.text!r}, not a number") from None


def _parse_xml(path: str) -> ET.Element:
    if not os.path.isfile(path):
        raise ArgumentError(f"box annotation not found: {path}")
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ArgumentError(f"{path} is not a Pascal VOC XML file: {exc}") from None


def read_voc(path: str) -> Tuple[Optional[str], Optional[Tuple[int, int]], List[Box]]:
    """One Pascal VOC annotation: ``(filename, (height, width), boxes)`` in the photo's own
    pixels (``filename`` and the size ``None`` where the file does not give them)."""
    root = _parse_xml(path)
    if root.tag != "annotation":
        raise ArgumentError(f"{path} is not a Pascal VOC annotation (its root is "
                            f"<{root.tag}>, not <annotation>)")
    name = root.findtext("filename")
    size = root.find("size")
    hw = None
    if size is not None and size.findtext("width") and size.findtext("height"):
        hw = (int(float(size.findtext("height"))), int(float(size.findtext("width"))))
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        x0, y0, x1, y1 = (_number(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((x0 - 1, y0 - 1, x1, y1, (obj.findtext("name") or "").strip()))
    return (name.strip() if name else None), hw, boxes


def read_coco(path: str) -> Dict[str, Tuple[Tuple[int, int], List[Box]]]:
    """A COCO instances file: file name -> ``((height, width), boxes)`` in the photo's own
    pixels (every image it lists, with or without boxes)."""
    if not os.path.isfile(path):
        raise ArgumentError(f"box annotation not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        images = {im["id"]: (os.path.basename(im["file_name"]),
                             (int(im["height"]), int(im["width"]))) for im in data["images"]}
        out: Dict[str, Tuple[Tuple[int, int], List[Box]]] = {
            name: (hw, []) for name, hw in images.values()}
        for ann in data.get("annotations", []):
            name, _ = images[ann["image_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
            out[name][1].append((x, y, x + w, y + h,
                                 categories.get(ann.get("category_id"), "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ArgumentError(f"{path} is not a COCO instances file ({type(exc).__name__}: "
                            f"{exc})") from None
    return out


def check_boxes(boxes: Sequence[Box], size: Tuple[int, int], where: str) -> None:
    """Raise :class:`ArgumentError` for a box outside a ``(height, width)`` image, an empty
    box, or no box at all."""
    height, width = size
    if not boxes:
        raise ArgumentError(f"{where} has no box; every image needs at least one for a "
                            f"localisation metric")
    for k, (x0, y0, x1, y1, name) in enumerate(boxes):
        label = f"box {k} ({name or 'unnamed'}: {x0:g}, {y0:g}, {x1:g}, {y1:g})"
        if not (x1 > x0 and y1 > y0):
            raise ArgumentError(f"{where}: {label} is empty (x1 <= x0 or y1 <= y0)")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ArgumentError(f"{where}: {label} lies outside the image ({width}x{height} "
                                f"pixels)")


def to_model_pixels(boxes: Sequence[Box], size: Tuple[int, int],
                    preprocessing: Preprocessing) -> List[Box]:
    """Boxes of a ``(height, width)`` photo in the pixels of the crop the model sees: scaled
    as torchvision resizes the short side to ``resize_size`` (the long side truncated to an
    integer), shifted by the centre crop's offset, clipped to the crop; boxes the crop leaves
    out are dropped."""
    height, width = size
    side = preprocessing.resize_size
    if height <= width:
        new_h, new_w = side, int(side * width / height)
    else:
        new_h, new_w = int(side * height / width), side
    crop = preprocessing.crop_size
    # torchvision's center_crop: the offset (negative where it pads a small image)
    top = int(round((new_h - crop) / 2.0)) if new_h >= crop else -((crop - new_h) // 2)
    left = int(round((new_w - crop) / 2.0)) if new_w >= crop else -((crop - new_w) // 2)
    sx, sy = new_w / width, new_h / height
    out = []
    for x0, y0, x1, y1, name in boxes:
        box = (min(max(x0 * sx - left, 0.0), crop), min(max(y0 * sy - top, 0.0), crop),
               min(max(x1 * sx - left, 0.0), crop), min(max(y1 * sy - top, 0.0), crop), name)
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return out


def read_boxes(source: str, images: Sequence[str],
               preprocessing: Optional[Preprocessing] = None, *,
               only: Optional[str] = None) -> List[List[Box]]:
    """Each image's boxes from ``source``: a folder of VOC XML files (``<stem>.xml`` for each
    image, or the file whose ``<filename>`` names it), one VOC XML file (for the image it
    names, or the only image), or a COCO instances ``.json`` (images matched by file name).

    Args:
        source: the folder or file.
        images: the image files, in order (their names match the annotations).
        preprocessing: the model's; boxes come back in its crop's pixels (``None``: the
            photos' own pixels, unclipped).
        only: keep only the boxes of this class name (case-insensitive): the explained
            class, as in the pointing game's protocol, where each class present in an image
            is explained and pointed at separately.

    Raises:
        ArgumentError: a missing file or annotation, a box outside its image, an image with
            no box (or none inside the crop the model sees).
    """
    from .images import image_size

    source = os.fspath(source)
    if not os.path.exists(source):
        raise ArgumentError(f"box annotations not found: {source} (give a folder of Pascal "
                            f"VOC .xml files, one .xml, or a COCO instances .json)")
    images = [os.fspath(p) for p in images]
    annotations = _annotations(source, images)
    out = []
    for path in images:
        name = os.path.basename(path)
        size = image_size(path)
        stated, boxes = annotations[name]
        if stated is not None and tuple(stated) != tuple(size):
            raise ArgumentError(f"the annotation of {name} is for a {stated[1]}x{stated[0]} "
                                f"image, but {path} is {size[1]}x{size[0]} pixels")
        if only is not None:
            boxes = [b for b in boxes if b[4].lower() == only.lower()]
        check_boxes(boxes, size, name if only is None else f"{name} (class {only!r})")
        if preprocessing is not None:
            boxes = to_model_pixels(boxes, size, preprocessing)
            if not boxes:
                raise ArgumentError(f"{name}: no box lies inside the centre crop the model "
                                    f"sees ({preprocessing.crop_size} px)")
        out.append(list(boxes))
    return out


def _annotations(source: str, images: Sequence[str]) -> dict:
    """Image file name -> ``(stated (height, width) or None, boxes)``."""
    names = [os.path.basename(p) for p in images]
    if os.path.isdir(source):
        xmls = sorted(os.path.join(source, f) for f in os.listdir(source)
                      if f.lower().endswith(".xml"))
        if not xmls:
            raise ArgumentError(f"no Pascal VOC .xml files in {source}")
        by_stem = {os.path.splitext(os.path.basename(p))[0]: p for p in xmls}
        found = {}
        named = None
        for name in names:
            stem = os.path.splitext(name)[0]
            if stem in by_stem:
                _, hw, boxes = read_voc(by_stem[stem])
            else:
                if named is None:  # by <filename>, read only when a stem does not match
                    named = {n: (hw, b) for n, hw, b in map(read_voc, xmls) if n}
                if name not in named:
                    raise ArgumentError(f"no annotation for {name} in {source} (looked for "
                                        f"{stem}.xml and a <filename>{name}</filename>)")
                hw, boxes = named[name]
            found[name] = (hw, boxes)
        return found
    if source.lower().endswith(".json"):
        coco = read_coco(source)
        missing = [n for n in names if n not in coco]
        if missing:
            raise ArgumentError(f"{source} lists no image named {missing[0]}"
                                + (f" (nor {len(missing) - 1} others)" if len(missing) > 1
                                   else ""))
        return {n: coco[n] for n in names}
    filename, hw, boxes = read_voc(source)
    if filename in names:
        return {n: ((hw, boxes) if n == filename else _missing(n, source)) for n in names}
    if len(names) == 1:
        return {names[0]: (hw, boxes)}
    raise ArgumentError(f"{source} annotates {filename or 'an unnamed image'}, not "
                        f"{names[0]}; give a folder of annotations for several images")


def _missing(name: str, source: str):
    raise ArgumentError(f"no annotation for {name}: {source} annotates one image")


def box_masks(boxes: Sequence[Sequence[Box]], size: Tuple[int, int]):
    """Boxes (per image) as a boolean mask ``[N, H, W]``: a pixel is inside a box when its
    centre is (a box thinner than a pixel keeps the pixel under its centre)."""
    import torch

    height, width = size
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for n, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1, *_ in image_boxes:
            c0, c1 = _pixels(x0, x1, width)
            r0, r1 = _pixels(y0, y1, height)
            masks[n, r0:r1, c0:c1] = True
    return masks


def _pixels(lo: float, hi: float, size: int) -> Tuple[int, int]:
    """The pixels ``[a, b)`` whose centres lie in ``[lo, hi)``, at least one."""
    a, b = math.ceil(lo - 0.5), math.ceil(hi - 0.5)
    if b <= a:
        a = min(max(int(math.floor((lo + hi) / 2)), 0), size - 1)
        b = a + 1
    return max(a, 0), min(b, size)
