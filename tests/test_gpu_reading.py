"""Training's GPU way of reading images (training/gpu_reading.py), forced on the CPU: JPEG
bytes and augmentation parameters from the workers, decoded, resized, cropped, flipped and
normalised a batch at a time. On the CPU both decoders are libjpeg-turbo, so the batches must
equal the CPU's path's exactly, augmentation included (the same seeded draws)."""
import os

import numpy as np
import pytest
import torch
from conftest import SMALL
from PIL import Image
from torch.utils.data import DataLoader

import deconvviz as dv
from deconvviz.data import jpeg_batches
from deconvviz.data.zoo import Preprocessing
from deconvviz.training import gpu_reading
from deconvviz.training.recipe import _Augmented, _image_folder, _transforms

PREP = Preprocessing(resize_size=64, crop_size=56)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of photos of several sizes: JPEGs (baseline, progressive, greyscale) and a
    PNG, which keeps the CPU's path."""
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        os.makedirs(root / c)
        for i, (h, w) in enumerate([(70, 90), (64, 64), (96, 72), (80, 80)]):
            pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            img = Image.fromarray(np.kron(pixels[::4, ::4], np.ones((4, 4, 1), np.uint8))[:h, :w])
            if i == 3:
                img.save(root / c / f"{i}.png")
            elif i == 2:
                img.convert("L").save(root / c / f"{i}.jpg", quality=85)
            else:
                img.save(root / c / f"{i}.jpg", quality=85, progressive=i == 1)
    return root


@pytest.mark.parametrize("train", [True, False])
def test_batches_equal_the_cpu_paths_augmentation_included(folder, train):
    augmented = _Augmented(_image_folder(str(folder), "training"), _transforms(PREP, train), 7)
    encoded = gpu_reading.EncodedImages(augmented)
    for epoch in (1, 2):
        encoded.epoch = epoch
        loader = DataLoader(encoded, batch_size=5, collate_fn=gpu_reading.collate)
        batches = list(gpu_reading.batches_on(loader, torch.device("cpu"), PREP))
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        expected = [augmented[i] for i in range(len(augmented))]
        assert torch.equal(x, torch.stack([e[0] for e in expected]))
        assert y.tolist() == [e[1] for e in expected]
    raw = [encoded[i][2] for i in range(len(encoded))]
    assert sum(r is not None for r in raw) == 6  # the PNGs went the CPU's way
    if train:  # the draws vary: not every crop is at the same corner, some are flipped
        assert len({r[1:4] for r in raw if r is not None}) > 1


def test_training_reads_the_gpus_way_where_it_runs(folder, tmp_path, monkeypatch):
    """The loop forced to the GPU's way on the CPU: the same run, to the bit."""
    options = dict(SMALL, epochs=1, batch_size=4, save_at=[], seed=3)
    first = dv.train("zfnet", str(folder), out=tmp_path / "cpu", **options)
    monkeypatch.setattr(jpeg_batches, "on_gpu", lambda device: True)
    seen = []
    real = gpu_reading.batches_on
    monkeypatch.setattr(gpu_reading, "batches_on",
                        lambda *a: seen.append(1) or real(*a))
    second = dv.train("zfnet", str(folder), out=tmp_path / "gpu_way", **options)
    assert seen and first.metrics[0]["train_loss"] == second.metrics[0]["train_loss"]
