"""Measure a shapes-world video from its pixels alone: background, objects and their tracks.

No learned model and no ground truth. Each pixel is labelled with its nearest palette colour
(the 8 object colours and the measured background); an object is a colour whose largest blob
shows in at least half the frames. Its coverage `alpha` (projection of each pixel onto the line
from background to object colour) gives sub-pixel area and centroid even across anti-aliased,
H.264-blurred or generated edges. Shape comes from two rotation-invariant features, turn from
the phase of an angular harmonic, tracked frame to frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..world import vocab

BG_TOL = 40.0  # RGB distance within which a pixel counts as a background candidate
COLOUR_TOL = 60.0  # a pixel is labelled only if its nearest palette colour is this close
MIN_BLOB_PX = 4  # a colour is present in a frame if its largest blob has this many pixels

# Shape from rotation-invariant angular harmonics of the coverage around its centroid:
# h_n = |sum alpha z^n| / sum alpha |z|^n. A disc has none; a square's 4-fold symmetry gives
# h4 ~ 0.43 (h3 = 0); the apex-up triangle's 3-fold shape gives h3 ~ 0.6. Blur and small size
# pull both towards 0, so the thresholds sit below the worst H.264 case measured at 10 px
# (triangle h3 >= 0.44, square h4 >= 0.26; circles stay under 0.06; docs/shapes-world.md).
TRIANGLE_H3, SQUARE_H4 = 0.25, 0.15
HARMONIC = {"square": 4, "triangle": 3}  # the angular symmetry that shows a shape's turn


@dataclass
class ObjectObservation:
    colour: str
    rgb: tuple[float, float, float]
    shape: str
    shape_features: tuple[float, float]  # (h3, h4)
    present: np.ndarray  # (T,) bool
    area: np.ndarray  # (T,) px^2, nan where absent
    centroid: np.ndarray  # (T, 2) px (x, y), nan where absent
    bottom: np.ndarray  # (T,) lowest drawn row + 1, px
    rotation: float  # total signed turn over the clip, degrees (0 for a circle)

    def extent(self, t: int) -> float:
        return math.sqrt(self.area[t] / vocab.SHAPE_FILL[self.shape])


@dataclass
class VideoObservation:
    width: int
    height: int
    num_frames: int
    background: str
    background_rgb: tuple[float, float, float]
    objects: list[ObjectObservation] = field(default_factory=list)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=r) if r else mask


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _shape_features(alpha: np.ndarray, cx: float, cy: float) -> tuple[float, float]:
    """(h3, h4): normalised 3rd and 4th angular harmonics of the coverage."""
    H, W = alpha.shape
    yy, xx = np.mgrid[0:H, 0:W]
    z = (xx + 0.5 - cx) - 1j * (yy + 0.5 - cy)  # y up
    r = np.abs(z)
    h3 = abs((alpha * z**3).sum()) / max(1e-9, float((alpha * r**3).sum()))
    h4 = abs((alpha * z**4).sum()) / max(1e-9, float((alpha * r**4).sum()))
    return float(h3), float(h4)


def classify_shape(features: tuple[float, float]) -> str:
    h3, h4 = features
    return "triangle" if h3 >= TRIANGLE_H3 else "square" if h4 >= SQUARE_H4 else "circle"


def measure_video(frames: np.ndarray) -> VideoObservation:
    """Observe a (T, H, W, 3) uint8 video of the shapes world."""
    f = np.asarray(frames, dtype=np.float32)
    T, H, W, _ = f.shape
    pix = f.reshape(-1, 3)
    bg_names = list(vocab.BACKGROUNDS)
    bg_pal = np.array([vocab.BACKGROUNDS[n] for n in bg_names], dtype=np.float32)
    near_bg = np.linalg.norm(pix[:, None, :] - bg_pal[None], axis=-1)  # (N, 3)
    counts = (near_bg < BG_TOL).sum(axis=0)
    bg_idx = int(np.argmax(counts))
    sel = near_bg[:, bg_idx] < BG_TOL
    bg_rgb = np.median(pix[sel], axis=0) if sel.any() else bg_pal[bg_idx]
    background = bg_names[int(np.argmin(np.linalg.norm(bg_pal - bg_rgb, axis=-1)))]

    names = list(vocab.OBJECT_COLOURS)
    pal = np.array([vocab.OBJECT_COLOURS[n] for n in names] + [bg_rgb], dtype=np.float32)  # (9, 3)
    d = np.linalg.norm(f[..., None, :] - pal, axis=-1)  # (T, H, W, 9)
    label = np.argmin(d, axis=-1)
    label[np.min(d, axis=-1) >= COLOUR_TOL] = -1  # unsure pixels belong to nobody
    obs = VideoObservation(W, H, T, background, tuple(float(v) for v in bg_rgb))

    cores = {}
    for ci, name in enumerate(names):
        core = np.zeros((T, H, W), dtype=bool)
        for t in range(T):
            m = label[t] == ci
            if m.sum() >= MIN_BLOB_PX:
                blob = _largest_blob(m)
                if blob.sum() >= MIN_BLOB_PX:
                    core[t] = blob
        if core.any(axis=(1, 2)).sum() >= max(1, T / 2):
            cores[ci] = core
    for ci, core in cores.items():
        others = np.zeros_like(core)
        for cj, oc in cores.items():
            if cj != ci:
                others |= oc
        obs.objects.append(_observe_object(f, core, others, names[ci], bg_rgb))
    return obs


def _observe_object(f: np.ndarray, core: np.ndarray, others: np.ndarray, colour: str,
                    bg_rgb: np.ndarray) -> ObjectObservation:
    T, H, W, _ = f.shape
    rgb = np.median(f[core], axis=0)
    direction = rgb - bg_rgb
    norm2 = float(direction @ direction) or 1.0
    present = core.any(axis=(1, 2))
    area = np.full(T, np.nan)
    centroid = np.full((T, 2), np.nan)
    bottom = np.full(T, np.nan)
    alphas = [None] * T
    yy, xx = np.mgrid[0:H, 0:W]
    for t in np.nonzero(present)[0]:
        region = _dilate(core[t], 2) & ~others[t]
        alpha = np.clip(((f[t] - bg_rgb) @ direction) / norm2, 0.0, 1.0) * region  # (H, W)
        a = float(alpha.sum())
        area[t] = a
        centroid[t] = ((alpha * (xx + 0.5)).sum() / a, (alpha * (yy + 0.5)).sum() / a)
        mask = alpha > 0.5
        bottom[t] = float(yy[mask].max() + 1) if mask.any() else np.nan
        alphas[t] = alpha
    # Shape from the frames where the object is largest (a shrunken object is few pixels).
    big = [t for t in np.nonzero(present)[0] if area[t] >= 0.5 * np.nanmax(area)]
    feats = np.array([_shape_features(alphas[t], *centroid[t]) for t in big])
    features = tuple(float(v) for v in np.median(feats, axis=0))
    shape = classify_shape(features)
    rotation = 0.0
    if shape in HARMONIC:
        n = HARMONIC[shape]
        prev = None
        for t in np.nonzero(present)[0]:
            px, py = xx + 0.5 - centroid[t][0], -(yy + 0.5 - centroid[t][1])  # y up: CCW positive
            m = (alphas[t] * (px * px + py * py) * np.exp(1j * n * np.arctan2(py, px))).sum()
            ang = math.degrees(np.angle(m)) / n
            if prev is not None:
                period = 360.0 / n
                rotation += (ang - prev + period / 2) % period - period / 2
            prev = ang
    return ObjectObservation(colour, tuple(float(v) for v in rgb), shape, features, present, area,
                             centroid, bottom, rotation)
