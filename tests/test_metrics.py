"""PSNR and SSIM on known cases."""
import math

import numpy as np
import pytest
import torch

from kinema.eval.metrics import psnr, ssim


def video(seed=0, shape=(3, 32, 40, 3), lo=60, hi=200):
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(np.uint8)


def test_identical_is_inf_and_one():
    v = video()
    assert psnr(v, v) == math.inf
    assert ssim(v, v) == pytest.approx(1.0, abs=1e-12)
    f = v.astype(np.float32) / 255
    assert psnr(f, f) == math.inf and ssim(f, f) == pytest.approx(1.0, abs=1e-12)


def test_psnr_known_values():
    v = video()
    assert psnr(v, v + 5) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)  # MSE exactly 25
    f = torch.from_numpy(v).float() / 255
    assert psnr(f, f + 0.1) == pytest.approx(20.0, abs=1e-5)  # float: range 1 by default
    assert psnr(f * 2 - 1, f * 2 - 1 + 0.2, data_range=2.0) == pytest.approx(20.0, abs=1e-5)


def test_psnr_of_gaussian_noise():
    rng = np.random.default_rng(1)
    a = np.full((4, 64, 64, 3), 128.0)
    b = a + rng.normal(0, 4.0, a.shape)
    assert psnr(a, b, data_range=255) == pytest.approx(20 * math.log10(255 / 4.0), abs=0.05)


def test_ssim_of_constant_frames_matches_formula():
    a, b = np.full((2, 16, 16, 3), 100, np.uint8), np.full((2, 16, 16, 3), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100 ** 2 + 120 ** 2 + c1)  # variances are 0: contrast term is 1
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)


def test_ssim_falls_with_noise_and_is_symmetric():
    v = video(2, (2, 48, 48, 3))
    rng = np.random.default_rng(3)
    small = np.clip(v + rng.normal(0, 3, v.shape), 0, 255).astype(np.uint8)
    big = np.clip(v + rng.normal(0, 30, v.shape), 0, 255).astype(np.uint8)
    assert 1.0 > ssim(v, small) > ssim(v, big) > 0.0
    assert ssim(v, big) == pytest.approx(ssim(big, v), abs=1e-12)
    assert ssim(v[0], small[0]) > ssim(v[0], big[0])  # one image (H, W, C) works too


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        psnr(video(shape=(2, 8, 8, 3)), video(shape=(3, 8, 8, 3)))
