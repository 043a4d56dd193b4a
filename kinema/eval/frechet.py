"""Frechet distance between two sets of videos' features: FVD with I3D, or a named substitute.

FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))  (Heusel et al. 2017; Unterthiner et al.
2018 for videos). FVD proper uses the Kinetics-400 I3D network's features; its weights cannot be
downloaded here, so:

- `--i3d PATH`: a TorchScript I3D on disk (the `i3d_torchscript.pt` the common FVD code uses).
  Clips are resized to 224x224, scaled to [-1, 1], given as (B, 3, T, 224, 224) and called with
  `rescale=False, resize=False, return_features=True` (or plainly, if the file takes no such
  arguments). Only this is reported as "FVD".
- otherwise **FD-hand**: the same distance on 167 handcrafted spatio-temporal features per clip
  (below), which measure what the shapes world varies: colours, layout, how much and which way
  things move. It is not comparable to any published FVD and is always labelled FD-hand. The
  report gives it with its floor: FD-hand between two disjoint sets of real clips of the same size.

FD-hand features of one clip (`handcrafted_features`):
  64  colour histogram (4x4x4 RGB bins, square-rooted) of every pixel of the clip
  64  the same over foreground pixels (farther than 40 RGB from each frame's dominant colour)
  16  where the foreground is: its mean mask over time, pooled to 4x4
   2  foreground area fraction: mean and standard deviation over time
   4  foreground centroid: first-to-last displacement (x, y) and path length, over the frame
      size; log of the last-to-first area ratio
   8  histogram of optical-flow magnitudes on moving pixels (bins 0.25, 0.5, 1, 2, 4, 8, 16 px)
   8  histogram of flow directions (8 sectors), weighted by magnitude
   1  mean absolute difference of consecutive frames / 255
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from scipy import linalg

from .quality import VideoAnalysis, colour_histogram

FLOW_BINS = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
FD_HAND_DIMS = 167


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, F) and b (M, F)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature sets (N >= 2, F) of equal F, got {a.shape} and {b.shape}")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # fewer clips than features: S_a S_b is singular, sqrtm warns
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():  # offset the diagonals (as pytorch-fid does)
            eps = 1e-6 * np.eye(len(s1))
            covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(max(0.0, ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


def handcrafted_features(video: VideoAnalysis) -> np.ndarray:
    """The FD-hand feature vector (FD_HAND_DIMS,) of one clip (see the module docstring)."""
    f, m = video.frames, video.masks
    T, H, W, _ = f.shape
    fg_pixels = f[m]
    area = m.reshape(T, -1).mean(1)  # (T,)
    cover = m.mean(0)  # (H, W): how often each pixel is foreground
    pooled = [blk.mean() for rows in np.array_split(cover, 4, axis=0) for blk in np.array_split(rows, 4, axis=1)]
    yy, xx = np.mgrid[0:H, 0:W]
    cent = np.array([[(xx * mt).sum() / mt.sum() / W, (yy * mt).sum() / mt.sum() / H] if mt.any() else [0.5, 0.5]
                     for mt in m])  # (T, 2)
    track = [*(cent[-1] - cent[0]), float(np.linalg.norm(np.diff(cent, axis=0), axis=1).sum()),
             float(np.log((area[-1] + 1e-3) / (area[0] + 1e-3)))]
    mags, angs = [], []
    for fl in video.flows:
        mag = np.hypot(fl[..., 0], fl[..., 1])
        moving = mag > FLOW_BINS[0]
        mags.append(mag[moving])
        angs.append(np.arctan2(fl[..., 1], fl[..., 0])[moving])
    mag, ang = (np.concatenate(x) if x else np.zeros(0) for x in (mags, angs))
    mag_hist = np.bincount(np.searchsorted(FLOW_BINS[1:], mag), minlength=8)[:8].astype(float)
    sector = ((ang + np.pi) / (2 * np.pi) * 8).astype(int) % 8
    dir_hist = np.bincount(sector, weights=mag, minlength=8)
    diff = np.abs(np.diff(f.astype(np.float32), axis=0)).mean() / 255.0 if T > 1 else 0.0
    feats = np.concatenate([
        colour_histogram(f.reshape(-1, 3)), colour_histogram(fg_pixels) if len(fg_pixels) else np.zeros(64),
        pooled, [area.mean(), area.std()], track,
        mag_hist / max(1.0, mag_hist.sum()), dir_hist / max(1e-9, dir_hist.sum()),
        [diff]])
    assert feats.shape == (FD_HAND_DIMS,), feats.shape
    return feats


class I3DFeatures:
    """Features from a TorchScript I3D file on disk (no download, ever)."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 8):
        import torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no I3D TorchScript file at '{path}'")
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; FVD's I3D ships as one
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as e:
            raise ValueError(f"'{path}' is not a TorchScript file: {e}") from e
        self.device, self.batch_size = device, batch_size

    def __call__(self, videos: list[np.ndarray]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = []
        with torch.no_grad():
            for i in range(0, len(videos), self.batch_size):
                x = torch.from_numpy(np.stack(videos[i:i + self.batch_size])).to(self.device)  # (B, T, H, W, 3)
                B, T = x.shape[:2]
                x = x.permute(0, 1, 4, 2, 3).flatten(0, 1).float() / 127.5 - 1.0  # (B*T, 3, H, W) in [-1, 1]
                x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
                x = x.unflatten(0, (B, T)).permute(0, 2, 1, 3, 4).contiguous()  # (B, 3, T, 224, 224)
                try:
                    feats = self.model(x, rescale=False, resize=False, return_features=True)
                except (RuntimeError, TypeError):  # a plain module(x) -> features
                    feats = self.model(x)
                out.append(feats.float().reshape(B, -1).cpu().numpy())
        return np.concatenate(out)


def feature_sets(analyses: dict[str, list[VideoAnalysis]], i3d: str | Path | None = None) -> tuple[str, dict]:
    """(metric name, {set name: (N, F) features}) for each named set of clips."""
    if i3d is not None:
        extract = I3DFeatures(i3d)
        return "FVD", {k: extract([v.frames for v in vs]) for k, vs in analyses.items()}
    return "FD-hand", {k: np.stack([handcrafted_features(v) for v in vs]) for k, vs in analyses.items()}
