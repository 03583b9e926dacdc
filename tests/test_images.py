import os

import numpy as np
import pytest
import torch
from PIL import Image

import deconvviz as dv
from deconvviz.data.images import decode_image
from deconvviz.data.zoo import Preprocessing


def _gradient(w=40, h=30):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt,mode,ext", [
    ("JPEG", "RGB", ".jpg"), ("PNG", "RGB", ".png"), ("PNG", "L", ".png"),
    ("PNG", "RGBA", ".png"), ("PNG", "P", ".png"), ("BMP", "RGB", ".bmp"),
    ("WEBP", "RGB", ".webp"), ("TIFF", "RGB", ".tif"), ("JPEG", "CMYK", ".jpg"),
])
def test_formats_decode_to_rgb(tmp_path, fmt, mode, ext):
    rgb = _gradient()
    img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"img{ext}"
    img.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    out = np.asarray(decode_image(path))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    expected = np.asarray(img.convert("RGB"))
    tolerance = 12 if fmt in ("JPEG", "WEBP") else 0
    assert np.abs(out.astype(int) - expected.astype(int)).mean() <= tolerance


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    out = np.asarray(decode_image(path))
    assert out.shape == (30, 40, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255 and 100 < out[15, 20, 0] < 156


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red, bottom transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = np.asarray(decode_image(path))
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[9, 9]) == (255, 255, 255)


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.fromarray(_gradient(40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, "JPEG", exif=exif, quality=95)
    assert decode_image(path).size == (30, 40)


def test_load_image_gives_the_models_input_and_the_crop(chelsea):
    x, rgb = dv.load_image(chelsea, "zfnet")
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert rgb.shape == (224, 224, 3) and rgb.dtype == np.uint8
    prep = Preprocessing()
    back = prep.denormalise(x[0])  # x is exactly the crop, normalised
    assert torch.allclose(back * 255, torch.from_numpy(rgb).permute(2, 0, 1).float(), atol=1e-3)


def test_custom_preprocessing_size(chelsea):
    x, rgb = dv.load_image(chelsea, preprocessing=Preprocessing(resize_size=231, crop_size=227))
    assert x.shape == (1, 3, 227, 227) and rgb.shape == (227, 227, 3)


@pytest.mark.parametrize("content,match", [
    (None, "not found"), (b"", "empty"), (b"this is text, not a picture", "not an image"),
])
def test_bad_files_raise_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(dv.ImageError, match=match) as info:
        dv.load_image(path, "zfnet")
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)


def test_truncated_file(tmp_path, chelsea):
    data = open(os.path.join(os.path.dirname(chelsea), "rocket.jpg"), "rb").read()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(dv.ImageError, match="cut.jpg"):
        dv.load_image(path, "zfnet")
