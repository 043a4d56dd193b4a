"""Video quality in the spirit of VBench (Huang et al. 2024), computed without downloaded weights.

Every function takes one video, uint8 (T, H, W, 3), and returns a score in [0, 1] where higher is
better (dynamic degree: whether the video moves at all). What differs from VBench is said at
each function and in docs/evaluation.md; where the protocol differs the report calls the metric
"VBench-style".

- temporal flickering: (255 - mean |frame t+1 - frame t|) / 255, VBench's formula exactly.
  VBench scores only static videos (it filters them with RAFT); we report it on the videos our
  dynamic-degree test calls static, and on all videos.
- motion smoothness: VBench drops the odd frames, re-creates them from their neighbours with a
  learned frame interpolator (AMT) and scores (255 - mean abs error) / 255. We interpolate with
  classical optical flow (OpenCV's Farneback), so a smooth video scores high only when its motion
  is simple enough for flow to follow, which in the shapes world (rigid flat shapes) it is.
- dynamic degree: VBench's rule (per frame pair, the mean of the largest 5 % of flow magnitudes;
  the video is dynamic when at least round(4 T / 16) pairs exceed 6 * min(H, W) / 256 px, scaled
  by max(1, 8 / fps)), with Farneback flow in place of RAFT.
- subject / background consistency: VBench's formula (frame t's mean cosine similarity to frame
  0 and to frame t-1, each clipped at 0, averaged over t >= 1) on features we can ship instead of
  DINO / CLIP: foreground = pixels farther than 40 RGB from the frame's dominant colour (the flat
  background of the shapes world). Subject: the foreground's colour histogram and its
  connected components' silhouettes, each scaled to its own box (so motion alone does not lower
  it). Background: colour histograms of the non-foreground pixels of each quarter of the frame.

Optical flow: Farneback on each RGB channel, fused per pixel by local gradient energy (a grey
image loses edges of equal luminance, e.g. a blue shape on the gray background).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

FG_TOL = 40.0  # RGB distance from the dominant colour beyond which a pixel is foreground
HIST_LEVELS = 4  # colour histogram bins per channel (4^3 = 64 bins)
SILHOUETTE = 12  # each component's silhouette is resampled to SILHOUETTE x SILHOUETTE
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.1, flags=0)


class MissingDependencyError(ValueError):
    """An optional package a command needs is not installed (one line that says what to install)."""


def require_cv2():
    try:
        import cv2
    except ImportError as e:
        raise MissingDependencyError("kinema eval needs OpenCV for optical flow: pip install 'kinema[eval]' "
                                     "(opencv-python-headless)") from e
    return cv2


def _video(frames) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 video shaped (T, H, W, 3), got {arr.dtype} {tuple(arr.shape)}")
    return arr


# ----------------------------------------------------------------------------- optical flow

def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) in pixels (dx, dy) from RGB frame a to b: a(p) ~ b(p + flow(p))."""
    cv2 = require_cv2()
    flows, weights = [], []
    for c in range(3):
        ac, bc = np.ascontiguousarray(a[..., c]), np.ascontiguousarray(b[..., c])
        flows.append(cv2.calcOpticalFlowFarneback(ac, bc, None, **FARNEBACK))  # (H, W, 2)
        energy = sum(np.square(g) for im in (ac, bc) for g in np.gradient(im.astype(np.float32)))
        weights.append(ndimage.gaussian_filter(energy, 2.0) + 1e-6)
    w = np.stack(weights)[..., None]  # (3, H, W, 1)
    return (np.stack(flows) * w).sum(0) / w.sum(0)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample image at p + flow(p) (bilinear, border replicated): backward warping."""
    cv2 = require_cv2()
    H, W = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return cv2.remap(image.astype(np.float32), gx + flow[..., 0].astype(np.float32),
                     gy + flow[..., 1].astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ----------------------------------------------------------------------------- the dimensions

def temporal_flickering(frames) -> float:
    """(255 - mean absolute difference of consecutive frames) / 255; 1.0 for a still video."""
    f = _video(frames).astype(np.float32)
    if len(f) < 2:
        return 1.0
    return float((255.0 - np.abs(np.diff(f, axis=0)).mean()) / 255.0)


def interpolate_middle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frame halfway between a and b by flow: 0.5 (a(p - d/2) + b(p + d/2)), d the a->b flow."""
    return 0.5 * (warp(a, 0.5 * optical_flow(b, a)) + warp(b, 0.5 * optical_flow(a, b)))


def motion_smoothness(frames) -> float:
    """(255 - mean abs error of the odd frames re-created from their even neighbours) / 255."""
    f = _video(frames)
    errors = [np.abs(np.rint(interpolate_middle(f[t - 1], f[t + 1])) - f[t].astype(np.float32)).mean()
              for t in range(1, len(f) - 1, 2)]
    return float((255.0 - np.mean(errors)) / 255.0) if errors else 1.0


def flow_top5(flow: np.ndarray) -> float:
    """The mean of the largest 5 % of flow magnitudes (VBench's per-pair motion score)."""
    mag = np.hypot(flow[..., 0], flow[..., 1]).ravel()
    k = max(1, int(mag.size * 0.05))
    return float(np.partition(mag, mag.size - k)[-k:].mean())


def dynamic_degree(frames, fps: float = 8.0, flows: list[np.ndarray] | None = None) -> tuple[bool, list[float]]:
    """(is the video dynamic, per-pair top-5% flow magnitude) with VBench's thresholds."""
    f = _video(frames)
    step = max(1, round(fps / 8))  # VBench samples ~8 fps
    if flows is None or step != 1:
        sub = f[::step]
        flows = [optical_flow(a, b) for a, b in zip(sub[:-1], sub[1:])]
    n = len(f[::step])
    scores = [flow_top5(fl) for fl in flows]
    thres = max(1.0, 8.0 / fps) * 6.0 * min(f.shape[1:3]) / 256.0
    return bool(n > 1 and sum(s > thres for s in scores) >= round(4 * n / 16)), scores


def foreground(frames) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) foreground masks and (T, 3) dominant (background) colours, per frame."""
    f = _video(frames)
    q = (f // 32).astype(np.int32)  # 8 levels per channel
    codes = (q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).reshape(len(f), -1)  # (T, H*W)
    masks, bgs = [], []
    for t, frame in enumerate(f):
        mode = np.bincount(codes[t], minlength=512).argmax()
        bg = np.median(frame.reshape(-1, 3)[codes[t] == mode], axis=0)
        masks.append(np.linalg.norm(frame.astype(np.float32) - bg, axis=-1) > FG_TOL)
        bgs.append(bg)
    return np.stack(masks), np.stack(bgs)


def colour_histogram(pixels: np.ndarray) -> np.ndarray:
    """Square-rooted normalised 4x4x4 RGB histogram (Hellinger features) of (N, 3) uint8 pixels."""
    q = (pixels.astype(np.int32) * HIST_LEVELS) // 256
    h = np.bincount((q[:, 0] * HIST_LEVELS + q[:, 1]) * HIST_LEVELS + q[:, 2], minlength=HIST_LEVELS ** 3)
    return np.sqrt(h / max(1, h.sum()))


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def subject_features(frames, masks: np.ndarray) -> np.ndarray:
    """(T, F): per frame [colour histogram of the foreground, area-weighted sum of its components'
    silhouettes each resized to its own box], each half unit length."""
    cv2 = require_cv2()
    out = []
    for frame, m in zip(_video(frames), masks):
        sil = np.zeros((SILHOUETTE, SILHOUETTE), np.float32)
        lab, _ = ndimage.label(m, structure=np.ones((3, 3)))
        for i, box in enumerate(ndimage.find_objects(lab), 1):
            comp = (lab[box] == i).astype(np.float32)
            shape = cv2.resize(comp, (SILHOUETTE, SILHOUETTE), interpolation=cv2.INTER_AREA)
            sil += comp.sum() / max(1, m.sum()) * shape
        out.append(np.concatenate([_unit(colour_histogram(frame[m])), _unit(sil.ravel())]) / np.sqrt(2))
    return np.stack(out)


def background_features(frames, masks: np.ndarray) -> np.ndarray:
    """(T, F): colour histograms of the background pixels of each quarter of the frame."""
    out = []
    for frame, m in zip(_video(frames), masks):
        H, W = m.shape
        parts = [colour_histogram(frame[y0:y1, x0:x1][~m[y0:y1, x0:x1]])
                 for y0, y1 in ((0, H // 2), (H // 2, H)) for x0, x1 in ((0, W // 2), (W // 2, W))]
        out.append(_unit(np.concatenate(parts)))
    return np.stack(out)


def consistency(features: np.ndarray) -> float:
    """VBench's consistency: mean over t >= 1 of (max(0, cos(f_t, f_0)) + max(0, cos(f_t, f_t-1))) / 2."""
    f = np.stack([_unit(v) for v in features])
    if len(f) < 2:
        return 1.0
    first = np.clip(f[1:] @ f[0], 0.0, None)
    prev = np.clip((f[1:] * f[:-1]).sum(-1), 0.0, None)
    return float(((first + prev) / 2).mean())


def subject_consistency(frames) -> float:
    masks, _ = foreground(frames)
    return consistency(subject_features(frames, masks))


def background_consistency(frames) -> float:
    masks, _ = foreground(frames)
    return consistency(background_features(frames, masks))


# ----------------------------------------------------------------------------- all at once

METRICS = {  # key -> (label in reports, what differs from VBench)
    "subject_consistency": ("Subject consistency (VBench-style)",
                            "foreground colour histogram + component silhouettes instead of DINO ViT-B/16"),
    "background_consistency": ("Background consistency (VBench-style)",
                               "per-quarter background colour histograms instead of CLIP ViT-B/32"),
    "temporal_flickering": ("Temporal flickering (VBench formula)",
                            "VBench's formula; reported on videos our dynamic-degree test calls static"),
    "motion_smoothness": ("Motion smoothness (VBench-style)",
                          "Farneback-flow frame interpolation instead of AMT"),
    "dynamic_degree": ("Dynamic degree (VBench-style)",
                       "VBench's thresholds on Farneback flow instead of RAFT"),
}


@dataclass
class VideoAnalysis:
    """One video's masks and consecutive-frame flows, computed once for every metric and feature."""
    frames: np.ndarray
    fps: float = 8.0
    masks: np.ndarray = field(init=False)
    background: np.ndarray = field(init=False)
    flows: list[np.ndarray] = field(init=False)

    def __post_init__(self):
        self.frames = _video(self.frames)
        self.masks, self.background = foreground(self.frames)
        f = self.frames
        self.flows = [optical_flow(a, b) for a, b in zip(f[:-1], f[1:])]

    def quality(self) -> dict:
        moving, scores = dynamic_degree(self.frames, self.fps, self.flows)
        return {"subject_consistency": consistency(subject_features(self.frames, self.masks)),
                "background_consistency": consistency(background_features(self.frames, self.masks)),
                "temporal_flickering": temporal_flickering(self.frames),
                "motion_smoothness": motion_smoothness(self.frames),
                "dynamic_degree": float(moving), "flow_top5_mean": float(np.mean(scores)) if scores else 0.0}


def summarise_quality(per_video: list[dict]) -> dict:
    """Means over videos; temporal flickering on the static ones (VBench's protocol) and on all."""
    if not per_video:
        return {}
    out = {k: float(np.mean([v[k] for v in per_video])) for k in METRICS if k != "temporal_flickering"}
    static = [v["temporal_flickering"] for v in per_video if not v["dynamic_degree"]]
    out["temporal_flickering"] = float(np.mean(static)) if static else None
    out["temporal_flickering_all"] = float(np.mean([v["temporal_flickering"] for v in per_video]))
    out["static_videos"] = len(static)
    out["videos"] = len(per_video)
    return out
