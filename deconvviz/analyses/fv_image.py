"""The images feature visualisation optimises: their parametrisations and the random
transformations each optimisation step sees (Olah et al., "Feature Visualization", Distill
2017, and its library Lucid).

- **pixel**: one free number per pixel and colour, squashed into ``[0, 1]`` by a sigmoid.
- **fourier**: the image's 2-D real Fourier spectrum, each frequency scaled by ``1/f`` (Lucid's
  ``fft_image``, ``decay_power=1``), so that every frequency starts with equal energy in the
  image a natural photo would have; gradient steps then do not pile up in high frequencies.
- **decorrelated colour** (either parametrisation): the three free channels are mapped to RGB
  by the square root of ImageNet's colour correlation (Lucid's published 3x3 matrix, its
  columns scaled to a largest norm of 1), so a step along one free channel changes colours as
  natural images do, not red, green and blue independently.

Transformation robustness (:data:`LUCID_TRANSFORMS`): each step, each image is padded with
grey, shifted, scaled, rotated and shifted again at random, drawn from its own seeded
generator, so that a visualisation does not depend on the other images in its batch. The whole
chain (and the resizing to the model's input) is one affine map per image, sampled once with
``grid_sample`` (bilinear); the canvas keeps the size it has at scale 1 (Lucid's changes by
the scale), which differs from Lucid by a pixel or two at the border.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..choices import FV_PARAMETRISATIONS
from ..errors import ArgumentError

__all__ = ["PARAMETRISATIONS", "COLOR_CORRELATION_SVD_SQRT", "Transforms", "LUCID_TRANSFORMS",
           "ImageParam", "draw_transforms", "transform_batch"]

PARAMETRISATIONS = FV_PARAMETRISATIONS

# Lucid's lucid/optvis/param/color.py: the square root of ImageNet's colour correlation
# (from its SVD), rows R, G, B.
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02),
                              (0.27, 0.00, -0.05),
                              (0.27, -0.09, 0.03))


def _colour_matrix() -> Tensor:
    m = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=torch.float64)
    return (m / m.norm(dim=0).max()).float()


@dataclass(frozen=True)
class Transforms:
    """Lucid's transformation robustness, in pixels of the optimised image.

    Attributes:
        pad: grey (0.5) border added on each side.
        jitter: the first random shift: a crop ``jitter`` pixels smaller, at a random offset.
        scales: the scale factors drawn from (uniformly).
        angles: the rotations, in degrees, drawn from (uniformly; repeats weigh a value).
        jitter2: the second random shift, after scaling and rotation.
    """

    pad: int = 12
    jitter: int = 8
    scales: Tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))
    angles: Tuple[float, ...] = tuple(range(-10, 11)) + (0,) * 5
    jitter2: int = 4

    def describe(self) -> str:
        return (f"pad {self.pad}, jitter {self.jitter}, scale {min(self.scales):.2f}-"
                f"{max(self.scales):.2f}, rotate ±{max(abs(a) for a in self.angles):g}°, "
                f"jitter {self.jitter2}")


# Lucid's standard_transforms (lucid/optvis/transform.py): pad(12, constant 0.5), jitter(8),
# random_scale([1 + (i - 5) / 50 for i in range(11)]) (0.90 to 1.10),
# random_rotate(list(range(-10, 11)) + 5 * [0]), jitter(4).
LUCID_TRANSFORMS = Transforms()


def _generator(seed: int, index: int) -> torch.Generator:
    """Image ``index``'s own random stream: the same whatever batch it is optimised in."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63))


class ImageParam:
    """A batch of images as free parameters: ``params`` (optimised) and :meth:`rgb` (the
    images in ``[0, 1]``, ``[N, 3, size, size]``, differentiable).

    Image ``i`` of the batch starts from the seeded draw of image ``indices[i]``: a
    visualisation is the same in any batch (up to the floating point of batched kernels).
    """

    def __init__(self, indices: Sequence[int], size: int, *, param: str = "fourier",
                 decorrelate: bool = True, seed: int = 0, sd: float = 0.01,
                 device=None, dtype=torch.float32) -> None:
        if param not in PARAMETRISATIONS:
            raise ArgumentError(f"unknown parametrisation {param!r}; choose from "
                                f"{', '.join(PARAMETRISATIONS)}")
        self.param, self.size, self.decorrelate = param, int(size), bool(decorrelate)
        shape = ((2, 3, size, size // 2 + 1) if param == "fourier" else (3, size, size))
        init = torch.stack([torch.randn(shape, generator=_generator(seed, i), dtype=torch.float64)
                            for i in indices]) * sd
        if param == "fourier":
            init = init.permute(0, 2, 3, 4, 1).contiguous()  # [..., (real, imag)]
            fy = torch.fft.fftfreq(size, dtype=torch.float64).reshape(-1, 1)
            fx = torch.fft.rfftfreq(size, dtype=torch.float64).reshape(1, -1)
            freqs = (fx * fx + fy * fy).sqrt()
            self.scale = (1.0 / freqs.clamp_min(1.0 / size)).to(device=device, dtype=dtype)
        self.params = init.to(device=device, dtype=dtype).requires_grad_(True)
        self.colour = _colour_matrix().to(device=device, dtype=dtype)

    def rgb(self) -> Tensor:
        """The images in ``[0, 1]``: ``[N, 3, size, size]``."""
        if self.param == "fourier":
            spectrum = torch.view_as_complex(self.params) * self.scale
            # orthonormal inverse: Lucid's irfft2d with its sqrt(h*w) factor; /4 is Lucid's
            t = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4.0
        else:
            t = self.params
        if self.decorrelate:
            t = torch.einsum("nchw,dc->ndhw", t, self.colour)
        return torch.sigmoid(t)


def draw_transforms(indices: Sequence[int], steps: int, transforms: Transforms, seed: int,
                    ) -> Tensor:
    """Every step's random draws for images ``indices``: ``[steps, N, 6]`` (shift y, x;
    scale; angle in degrees; second shift y, x), each image from its own stream (seeded
    apart from its starting point's)."""
    out = torch.empty(steps, len(indices), 6, dtype=torch.float64)
    scales = torch.tensor(transforms.scales, dtype=torch.float64)
    angles = torch.tensor(transforms.angles, dtype=torch.float64)
    for j, index in enumerate(indices):
        g = _generator(seed + 7919, index)
        # a crop ``jitter`` pixels smaller: offsets 0 .. jitter, as TensorFlow's random_crop
        shift = torch.randint(0, transforms.jitter + 1, (steps, 2), generator=g)
        scale = scales[torch.randint(0, len(scales), (steps,), generator=g)]
        angle = angles[torch.randint(0, len(angles), (steps,), generator=g)]
        shift2 = torch.randint(0, transforms.jitter2 + 1, (steps, 2), generator=g)
        out[:, j] = torch.cat([shift - transforms.jitter / 2, scale[:, None], angle[:, None],
                               shift2 - transforms.jitter2 / 2], dim=1)
    return out


def transform_batch(images: Tensor, out_size: int, transforms: Optional[Transforms],
                    draws: Optional[Tensor]) -> Tensor:
    """``images`` (``[N, 3, S, S]`` in ``[0, 1]``) as the model sees them at one step: padded,
    shifted, scaled, rotated and shifted per ``draws`` (``[N, 6]``, from
    :func:`draw_transforms`) and resampled to ``out_size`` pixels; without ``transforms``
    (or ``draws``), only resized (bilinear)."""
    n, _, size, _ = images.shape
    if transforms is None or draws is None:
        if size == out_size:
            return images
        return F.interpolate(images, size=(out_size, out_size), mode="bilinear",
                             align_corners=False)
    d = draws.to(device=images.device, dtype=torch.float64)
    extent = size + 2 * transforms.pad - transforms.jitter - transforms.jitter2
    theta = torch.deg2rad(d[:, 3])
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # [N,2,2]
    scale = d[:, 2].reshape(-1, 1, 1)
    # output (x, y) in [-1, 1] -> pixels of the rotated canvas -> of the image, then [-1, 1]
    linear = rot / scale * (extent / size)
    shift2 = torch.stack([d[:, 5], d[:, 4]], 1).unsqueeze(2)  # (x, y)
    shift1 = torch.stack([d[:, 1], d[:, 0]], 1).unsqueeze(2)
    offset = (torch.bmm(rot / scale, shift2) + shift1) * (2.0 / size)
    affine = torch.cat([linear, offset], dim=2).to(images.dtype)
    grid = F.affine_grid(affine, [n, 3, out_size, out_size], align_corners=False)
    # the border is grey (0.5): sample the image minus grey with zeros outside
    return F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + 0.5
