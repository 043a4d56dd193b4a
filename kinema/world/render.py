"""Draw a scene to pixels: flat shapes, anti-aliased by supersampling, on a flat background."""
from __future__ import annotations

import math

import numpy as np

from . import vocab
from .scene import Scene, Track, circumradius

SUPERSAMPLE = 4  # 4x4 samples a pixel: edges get 17 coverage levels


def coverage(track: Track, t: int, W: int, H: int, ss: int = SUPERSAMPLE):
    """Fraction of each pixel the object covers at frame t, over the object's bounding window.

    Returns ((rows slice, cols slice), cov) with cov of shape (rows, cols) in [0, 1].
    """
    cx, cy = track.centroid[t]
    r = circumradius(track.shape, track.extent[t]) + 1
    x0, x1 = max(0, int(math.floor(cx - r))), min(W, int(math.ceil(cx + r)))
    y0, y1 = max(0, int(math.floor(cy - r))), min(H, int(math.ceil(cy + r)))
    if x1 <= x0 or y1 <= y0:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0))
    sub = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1) - cx  # (cols*ss,)
    ys = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1) - cy  # (rows*ss,)
    X, Y = xs[None, :], ys[:, None]
    if track.shape == "circle":
        inside = X * X + Y * Y <= (track.extent[t] / 2) ** 2
    else:
        # Convex polygon: inside when on the same side of every edge (vertices run clockwise on
        # screen, i.e. with positive cross products in y-down coordinates).
        verts = [(vx - cx, vy - cy) for vx, vy in track.vertices(t)]
        inside = np.ones((ys.size, xs.size), dtype=bool)
        for (ax, ay), (bx, by) in zip(verts, verts[1:] + verts[:1]):
            inside &= (bx - ax) * (Y - ay) - (by - ay) * (X - ax) >= 0
    cov = inside.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))  # (rows, cols)
    return (slice(y0, y1), slice(x0, x1)), cov


def render(scene: Scene) -> np.ndarray:
    """All frames of a scene as uint8, shaped (T, H, W, 3)."""
    W, H, T = scene.width, scene.height, scene.num_frames
    bg = np.asarray(vocab.BACKGROUNDS[scene.background], dtype=np.float64)
    frames = np.empty((T, H, W, 3), dtype=np.float64)
    frames[:] = bg
    for t in range(T):
        for obj in scene.objects:  # drawn in order; the sampler keeps overlaps under 2%
            (rows, cols), cov = coverage(obj, t, W, H)
            colour = np.asarray(vocab.OBJECT_COLOURS[obj.colour], dtype=np.float64)
            patch = frames[t, rows, cols]
            frames[t, rows, cols] = patch + cov[..., None] * (colour - patch)
    return np.rint(frames).astype(np.uint8)
