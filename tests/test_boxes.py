"""Object boxes (deconvviz.data.boxes): Pascal VOC XML and COCO JSON read into each image's
boxes in the crop the model sees, checked against the crop load_image makes of a photo with
the box painted in, and every bad annotation refused by name."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from deconvviz.data.boxes import box_masks, read_boxes, to_model_pixels
from deconvviz.data.images import load_image
from deconvviz.data.zoo import Preprocessing
from deconvviz.errors import ArgumentError

PREP = Preprocessing(resize_size=24, crop_size=24, mean=(0, 0, 0), std=(1, 1, 1))


def voc(path, filename, size, objects):
    """A Pascal VOC annotation: objects (name, xmin, ymin, xmax, ymax), 1-based inclusive."""
    rows = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                   f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                   for n, a, b, c, d in objects)
    path.write_text(f"<annotation><filename>{filename}</filename><size><width>{size[0]}"
                    f"</width><height>{size[1]}</height><depth>3</depth></size>{rows}"
                    f"</annotation>")
    return str(path)


def photo(path, size=(64, 48), box=None):
    """A black photo (width, height) with the 0-based box [x0, x1) x [y0, y1) painted white."""
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        pixels[y0:y1, x0:x1] = 255
    Image.fromarray(pixels).save(path)
    return str(path)


def test_a_voc_box_lands_where_load_image_puts_its_pixels(tmp_path):
    # 64x48 -> short side 24 (x0.5): 32x24, centre crop 24: 4 px off the left
    image = photo(tmp_path / "a.png", box=(20, 8, 44, 40))
    folder = tmp_path / "ann"
    folder.mkdir()
    voc(folder / "a.xml", "a.png", (64, 48), [("cat", 21, 9, 44, 40)])
    (boxes,) = read_boxes(str(folder), [image], PREP)
    assert boxes == [(20 * 0.5 - 4, 4.0, 44 * 0.5 - 4, 20.0, "cat")]  # by hand
    mask = box_masks([boxes], (24, 24))[0]
    x, _ = load_image(image, preprocessing=PREP)
    bright = x[0].mean(0) > 0.5
    assert torch.equal(mask, bright)  # the box is exactly the painted pixels


def test_coco_boxes_and_the_crop_clips_them(tmp_path):
    image = photo(tmp_path / "b.png", size=(48, 64))  # tall: 24x32, crop 4 px off the top
    data = {"images": [{"id": 7, "file_name": "sub/b.png", "width": 48, "height": 64}],
            "annotations": [{"image_id": 7, "bbox": [2, 0, 10, 6], "category_id": 1},
                            {"image_id": 7, "bbox": [0, 40, 4, 16], "category_id": 2}],
            "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cup"}]}
    (tmp_path / "coco.json").write_text(json.dumps(data))
    (boxes,) = read_boxes(str(tmp_path / "coco.json"), [image], PREP)
    # the dog, rows 0-6 of 64 -> 0-3 of 32, lies above the crop (rows 4-28): dropped; the
    # cup (0, 40, 4, 56) -> x0.5 (0, 20, 2, 28) -> 4 px up (0, 16, 2, 24)
    assert boxes == [(0.0, 16.0, 2.0, 24.0, "cup")]
    assert read_boxes(str(tmp_path / "coco.json"), [image])[0][0] == (2.0, 0.0, 12.0, 6.0,
                                                                      "dog")
    # one class's boxes (the pointing game explains each class present separately)
    assert read_boxes(str(tmp_path / "coco.json"), [image], only="Cup") == \
        [[(0.0, 40.0, 4.0, 56.0, "cup")]]
    with pytest.raises(ArgumentError, match=r"^b.png \(class 'bird'\) has no box"):
        read_boxes(str(tmp_path / "coco.json"), [image], only="bird")


def test_one_voc_file_for_one_image_and_masks_by_pixel_centres(tmp_path):
    image = photo(tmp_path / "c.png", size=(8, 8))
    xml = voc(tmp_path / "c.xml", "other_name.png", (8, 8), [("x", 2, 2, 3, 5)])
    (boxes,) = read_boxes(xml, [image])  # the only image: its file name need not match
    assert boxes == [(1.0, 1.0, 3.0, 5.0, "x")]
    mask = box_masks([[(0.4, 0.6, 2.6, 1.4, "")]], (3, 4))[0]
    # columns whose centre (0.5, 1.5, 2.5) lies in [0.4, 2.6); row centre 0.5 is not in
    # [0.6, 1.4) but 1.5 is not either: a box thinner than a pixel keeps the row under its
    # centre (1.0 -> row 1)
    assert mask.int().tolist() == [[0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("case,message", [
    ("missing", "box annotations not found"),
    ("outside", "lies outside the image (8x16 pixels)"),
    ("no box", "c.png has no box"),
    ("no annotation", "no annotation for c.png"),
    ("not xml", "is not a Pascal VOC XML file"),
    ("wrong size", "the annotation of c.png is for a 16x8 image, but"),
    ("cropped away", "no box lies inside the centre crop"),
])
def test_bad_annotations_are_refused_by_name(tmp_path, case, message):
    image = photo(tmp_path / "c.png", size=(8, 16))
    folder = tmp_path / "ann"
    folder.mkdir()
    objects = {"outside": [("x", 1, 1, 9, 4)], "no box": [],
               "cropped away": [("x", 1, 1, 8, 2)]}.get(case, [("x", 1, 1, 4, 4)])
    size = (16, 8) if case == "wrong size" else (8, 16)
    name = "d" if case == "no annotation" else "c"
    if case != "missing":
        voc(folder / f"{name}.xml", f"{name}.png", size, objects)
    if case == "not xml":
        (folder / "c.xml").write_text("not <xml")
    source = str(tmp_path / "nothing") if case == "missing" else str(folder)
    prep = Preprocessing(resize_size=8, crop_size=8)
    with pytest.raises(ArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_boxes(source, [image], prep)


def test_a_small_image_padded_by_the_crop_shifts_its_boxes(tmp_path):
    # 4x4 -> short side 4, crop 8: torchvision pads 2 black pixels on each side
    prep = Preprocessing(resize_size=4, crop_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    image = photo(tmp_path / "s.png", size=(4, 4), box=(0, 0, 4, 4))
    boxes = to_model_pixels([(0, 0, 4, 4, "")], (4, 4), prep)
    assert boxes == [(2.0, 2.0, 6.0, 6.0, "")]
    x, _ = load_image(image, preprocessing=prep)
    assert torch.equal(box_masks([boxes], (8, 8))[0], x[0].mean(0) > 0.5)
