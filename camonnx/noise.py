"""Seeded noisy copies of a prepared batch (SmoothGrad / Smooth Grad-CAM++, docs/methods.md#smoothgradcampp).

In the spirit of captum's ``NoiseTunnel``: copy t of image i is

    x_{i,t} = x_i + σ_i · z_t,    σ_i = s · (max(x_i) − min(x_i)),    z_t ~ N(0, I)

where max/min run over all channels and pixels of image i *in the model's input space* (the
prepared NCHW tensor, after the preprocessing recipe), and s is the noise level (``noise``).

The standard-normal draws z_1 … z_n come from a CPU ``torch.Generator`` seeded with ``seed``, one
draw of shape (C, H, W) per copy, in order; they depend on the seed and the image shape only, not on
the device, the batch or the image's position in it. Every image of a batch therefore uses the same
z_t (scaled by its own σ_i): an image's explanation is the same whether it is explained alone or in
any batch, and a test can rebuild the exact copies with :func:`noisy_copies`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterator

import torch

from camonnx.errors import InputError


def check_samples(samples) -> int:
    """The number of noisy copies: an integer ≥ 1."""
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral):
        raise InputError(f"samples must be a whole number of noisy copies (≥ 1), got {samples!r}.")
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}.")
    return int(samples)


def check_noise(noise) -> float:
    """The noise level s: a finite number ≥ 0 (σ = s · (max(x) − min(x)) per image)."""
    try:
        value = float(noise)
    except (TypeError, ValueError):
        raise InputError(f"noise must be a number ≥ 0 (σ = noise · (max(x) − min(x))), got {noise!r}.") from None
    if isinstance(noise, bool) or not math.isfinite(value) or value < 0:
        raise InputError(f"noise must be a finite number ≥ 0 (σ = noise · (max(x) − min(x))), got {noise!r}.")
    return value


def noise_sigma(x: torch.Tensor, noise: float) -> torch.Tensor:
    """σ_i = noise · (max(x_i) − min(x_i)) for each image of an (N, C, H, W) batch, shape (N,)."""
    flat = x.detach().reshape(x.shape[0], -1)
    return noise * (flat.amax(dim=1) - flat.amin(dim=1))


def standard_noise(samples: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """z_1 … z_n: (samples, *shape) float32 standard normals, one seeded draw per copy, on CPU."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
                        for _ in range(samples)])


@dataclass(frozen=True)
class NoiseTunnel:
    """n seeded noisy copies per image; σ = ``noise`` · (max − min) of each image."""

    samples: int = 25
    noise: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", check_samples(self.samples))
        object.__setattr__(self, "noise", check_noise(self.noise))

    def standard(self, shape: tuple[int, ...]) -> torch.Tensor:
        return standard_noise(self.samples, shape, self.seed)

    def copies(self, x: torch.Tensor) -> torch.Tensor:
        """All copies of an (N, C, H, W) batch: (N, samples, C, H, W), on x's device."""
        z = self.standard(tuple(x.shape[1:])).to(x.device)
        sigma = noise_sigma(x, self.noise).to(x.dtype)
        return x.detach().unsqueeze(1) + sigma.reshape(-1, 1, 1, 1, 1) * z.unsqueeze(0)

    def chunks(self, x: torch.Tensor, chunk: int) -> Iterator[tuple[list[int], torch.Tensor]]:
        """The copies in image-major order, at most ``chunk`` per piece: yields
        (image index of each copy, copies (M, C, H, W)). Images go whole into a piece when
        ``samples ≤ chunk`` (⌊chunk / samples⌋ images per piece); otherwise an image's copies span
        consecutive pieces. The copies equal :meth:`copies` exactly (same z_t, same σ_i)."""
        if chunk < 1:
            raise InputError(f"chunk must be at least 1, got {chunk}.")
        z = self.standard(tuple(x.shape[1:])).to(x.device)
        sigma = noise_sigma(x, self.noise).to(x.dtype)
        x = x.detach()
        per_piece = max(1, chunk // self.samples)
        for first in range(0, x.shape[0], per_piece):
            images = range(first, min(first + per_piece, x.shape[0]))
            pairs = [(i, t) for i in images for t in range(self.samples)]
            for start in range(0, len(pairs), chunk):
                piece = pairs[start:start + chunk]
                rows = [i for i, _ in piece]
                index = torch.as_tensor(rows, device=x.device)
                ts = torch.as_tensor([t for _, t in piece], device=x.device)
                yield rows, x[index] + sigma[index].reshape(-1, 1, 1, 1) * z[ts]


def noisy_copies(x: torch.Tensor, samples: int = 25, noise: float = 0.15, seed: int = 0) -> torch.Tensor:
    """(N, samples, C, H, W): the exact copies Smooth Grad-CAM++ runs for batch ``x``."""
    return NoiseTunnel(samples, noise, seed).copies(x)
