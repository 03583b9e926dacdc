"""The GPU's way of reading JPEGs (data/jpeg_batches.py), run here on the CPU: the same
tensor path (torchvision's decode_jpeg, then resize, centre crop and normalise on tensors)
against today's (Pillow's decoder). Both decoders are libjpeg-turbo on the CPU: the crops are
identical (max difference measured: 0 grey levels on every photo below). nvJPEG on a GPU may
differ by a few levels (tests/test_gpu.py holds it to GPU_JPEG_LEVELS)."""
import os
import shutil

import pytest
import torch
from conftest import EXAMPLES
from PIL import Image

import deconvviz as dv
from deconvviz.data import jpeg_batches
from deconvviz.data.zoo import Preprocessing

PREP = Preprocessing(resize_size=72, crop_size=64)
CPU_JPEG_LEVELS = 0  # measured: libjpeg-turbo twice


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """The bundled JPEGs; the PNGs as baseline, progressive and greyscale JPEGs; a CMYK one,
    a rotated one (EXIF orientation 6), a truncated one, and a PNG."""
    root = tmp_path_factory.mktemp("jpegs")
    for name in ("grace_hopper.jpg", "rocket.jpg", "chelsea.png"):
        shutil.copy(os.path.join(EXAMPLES, name), root / name)
    with Image.open(os.path.join(EXAMPLES, "coffee.png")) as img:
        rgb = img.convert("RGB")
    rgb.save(root / "baseline.jpg", quality=90)
    rgb.save(root / "progressive.jpg", quality=75, progressive=True)
    rgb.convert("L").save(root / "grey.jpg", quality=90)
    rgb.convert("CMYK").save(root / "cmyk.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(root / "rotated.jpg", quality=90, exif=exif)
    data = (root / "baseline.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return root


def test_only_what_a_gpu_decodes_like_pillow_goes_the_tensor_way(jpegs):
    decodable = sorted(p for p in os.listdir(jpegs) if jpeg_batches.gpu_decodable(str(jpegs / p)))
    assert decodable == ["baseline.jpg", "grace_hopper.jpg", "grey.jpg", "progressive.jpg",
                         "rocket.jpg", "truncated.jpg"]  # the header of a truncated file is fine


def test_tensor_path_equals_pillows_on_the_cpu(jpegs):
    names = ["baseline.jpg", "grace_hopper.jpg", "grey.jpg", "progressive.jpg", "rocket.jpg",
             "truncated.jpg"]
    paths = [str(jpegs / n) for n in names]
    datas = [jpeg_batches.read_jpeg(p) for p in paths]
    x, kept, failed = jpeg_batches.decode_batch(datas, paths, PREP, "cpu")
    # the truncated file: refused by the batch decoder, then by Pillow, with Pillow's reason
    assert kept == [0, 1, 2, 3, 4] and [i for i, _ in failed] == [5]
    assert "truncated" in failed[0][1] or "cannot decode" in failed[0][1]
    for row, path in zip(x, paths):
        expected, rgb = dv.load_image(path, preprocessing=PREP)
        crop = (PREP.denormalise(row) * 255).round()
        levels = (crop.permute(1, 2, 0) - torch.from_numpy(rgb).float()).abs().max()
        assert levels <= CPU_JPEG_LEVELS, path
        assert torch.allclose(row, expected[0], atol=1e-6), path


@pytest.mark.agreement
def test_a_scan_reading_jpegs_the_gpus_way_finds_the_same_hits(jpegs, monkeypatch):
    """Forced on the CPU: JPEG bytes from the loader, decoded a batch at a time; the rest
    (PNG, CMYK, rotated) through Pillow, the truncated file skipped with its reason."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU()).eval()
    kwargs = dict(top=3, batch_size=4, progress=False, preprocessing=PREP)
    today = dv.scan(model, str(jpegs), layers=["1", "3"], **kwargs)
    monkeypatch.setattr(jpeg_batches, "on_gpu", lambda device: True)
    seen = []
    real = jpeg_batches.decode_batch
    monkeypatch.setattr(jpeg_batches, "decode_batch",
                        lambda datas, *a: seen.append(len(datas)) or real(datas, *a))
    gpu_way = dv.scan(model, str(jpegs), layers=["1", "3"], **kwargs)
    assert sum(seen) == 6  # every decodable JPEG went the tensor way
    assert dv.same_hits(today, gpu_way) == []
    assert [p for p, _ in gpu_way.skipped] == [p for p, _ in today.skipped] \
        == [str(jpegs / "truncated.jpg")]
