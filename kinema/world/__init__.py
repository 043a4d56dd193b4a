"""The shapes world (spec v1, docs/shapes-world.md): seeded clips of coloured shapes with exact
captions and per-frame ground truth. Kinema's default training set and the ground of the judge.

    clip = make_clip(seed=7, width=64, height=64, num_frames=17)
    clip.frames        # (T, H, W, 3) uint8
    clip.text          # detailed caption;  clip.short_text: short caption
    clip.ground_truth  # JSON-ready dict: per object shape, colour, size, motion, per-frame geometry
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from . import vocab
from .captions import captions
from .parse import ObjectClaim, PromptClaims, PromptError, parse_prompt
from .render import render
from .scene import Scene, Track, respin, sample_scene


@dataclass
class Clip:
    scene: Scene
    frames: np.ndarray  # (T, H, W, 3) uint8
    text: str
    short_text: str

    @property
    def ground_truth(self) -> dict:
        return ground_truth(self.scene, self.text, self.short_text)


def make_clip(seed: int, width: int = 64, height: int = 64, num_frames: int = 17, fps: float = 8.0,
              num_objects: int | None = None, exclude_words: Collection[str] = (),
              prefer_words: Collection[str] = (), spin_degrees=None,
              spin_direction: str | None = None) -> Clip:
    """One clip from its seed: same arguments, same pixels and captions, on any machine.
    Captions never use `exclude_words` and use `prefer_words` wherever they can. `spin_degrees`
    (lo, hi), or {shape: (lo, hi)}: spinning objects (of that shape) turn lo-hi degrees in all
    instead of the world's 115-240 (`respin`; the captions are the same); `spin_direction`
    ("counterclockwise" or "clockwise"): every spinning object turns that way."""
    scene = sample_scene(seed, width, height, num_frames, fps, num_objects)
    if spin_degrees is not None or spin_direction is not None:
        scene = respin(scene, spin_degrees, spin_direction)
    text, short = captions(scene, exclude_words, prefer_words)
    return Clip(scene, render(scene), text, short)


def clip_captions(seed: int, width: int = 64, height: int = 64, num_frames: int = 17, fps: float = 8.0,
                  num_objects: int | None = None, exclude_words: Collection[str] = (),
                  prefer_words: Collection[str] = ()) -> tuple[str, str]:
    """(detailed, short) caption of make_clip(same arguments), without rendering its pixels."""
    return captions(sample_scene(seed, width, height, num_frames, fps, num_objects), exclude_words, prefer_words)


def ground_truth(scene: Scene, text: str = "", short_text: str = "") -> dict:
    """Everything the clip shows, machine-readable (WORLD.md: kept with every clip)."""
    def r(x: float) -> float:
        return round(float(x), 3)

    objects = []
    for o in scene.objects:
        T = len(o.centroid)
        objects.append({
            "colour": o.colour, "shape": o.shape, "size": o.size, "motion": o.motion, "speed": o.speed,
            "centroid": [[r(x), r(y)] for x, y in o.centroid],
            "extent": [r(e) for e in o.extent],
            "angle": [r(a) for a in o.angle],
            "bbox": [[r(v) for v in o.bbox(t)] for t in range(T)],
        })
    return {"spec": vocab.SPEC_VERSION, "seed": scene.seed, "width": scene.width, "height": scene.height,
            "num_frames": scene.num_frames, "fps": scene.fps, "background": scene.background,
            "objects": objects, "text": text, "short_text": short_text}


__all__ = ["Clip", "make_clip", "clip_captions", "ground_truth", "sample_scene", "render", "captions", "parse_prompt",
           "PromptClaims", "ObjectClaim", "PromptError", "Scene", "Track", "respin", "vocab"]
