"""Reconstruction metrics for videos: PSNR and SSIM.

Inputs are one video `(T, H, W, C)` (or any array whose last three axes are H, W, C), as numpy or
torch, uint8 or float. `data_range` is the span of valid values: 255 for uint8 (the default for
integer input), 1.0 for float input unless given (pass 2.0 for [-1, 1] tensors).

- `psnr`: 10 log10(range^2 / MSE), with the MSE over every pixel, channel and frame of the video
  (one number per video; average per-video PSNRs to summarise a set). Identical videos give inf.
- `ssim`: the SSIM of Wang et al. (2004) with their constants: an 11x11 Gaussian window
  (sigma 1.5), K1 = 0.01, K2 = 0.03, computed on every colour channel of every frame separately
  over the "valid" window positions (no padding, as in the reference MATLAB code), then averaged
  over positions, channels and frames. Frames smaller than the window use a window of their size.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _as_float64(a) -> tuple[torch.Tensor, bool]:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    is_int = not (t.is_floating_point() or t.is_complex())
    return t.detach().to("cpu", torch.float64), is_int


def _pair(a, b, data_range: float | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    x, x_int = _as_float64(a)
    y, y_int = _as_float64(b)
    if x.shape != y.shape:
        raise ValueError(f"videos must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if data_range is None:
        data_range = 255.0 if (x_int and y_int) else 1.0
    return x, y, float(data_range)


def psnr(a, b, data_range: float | None = None) -> float:
    """PSNR in dB of video b against video a (MSE over the whole video); inf when identical."""
    x, y, r = _pair(a, b, data_range)
    mse = float((x - y).pow(2).mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(r * r / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    c = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(c ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a, b, data_range: float | None = None, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> float:
    """Mean SSIM over frames and channels (Gaussian window, valid positions); 1.0 when identical."""
    x, y, r = _pair(a, b, data_range)
    if x.ndim < 3:
        raise ValueError(f"expected (..., H, W, C), got shape {tuple(x.shape)}")
    H, W, C = x.shape[-3:]
    x = x.reshape(-1, H, W, C).permute(0, 3, 1, 2).reshape(-1, 1, H, W)  # (frames*C, 1, H, W)
    y = y.reshape(-1, H, W, C).permute(0, 3, 1, 2).reshape(-1, 1, H, W)
    win = min(window, H, W)
    g = _gaussian_window(win, sigma)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian filter, valid positions
        t = F.conv2d(t, g.view(1, 1, win, 1))
        return F.conv2d(t, g.view(1, 1, 1, win))

    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())
