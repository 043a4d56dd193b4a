"""Near misses: world scenes whose motions fall short of, or past, what their words mean.

Every world clip shows its caption with a margin (a move right goes >= 0.40 of the canvas, a spin
turns >= 115 degrees), so a reader trained on world clips alone never sees the boundary the judge
draws: a move of 0.25 still looks most like "right" of the motions it knows. The model's failing
videos sit right there (docs/default-model.md, session 34: moves too short or too long for their
speed word, spins that turn back, growth under 2x). `near_miss(scene, seed)` redraws some objects'
motions as such misses, deterministically from `seed`; what the clip then shows is read from its
ground truth by the judge's own rules (`kinema.eval.judge.describe_motion`), not from the caption.

    scene = near_miss(sample_scene(seed), seed)   # same objects, colours, shapes, sizes, background

Kinds of miss, one per perturbed object (chance `p` each):
- scale: the motion's size times f in [0.15, 1.0) (a short move, a small turn, a weak growth), or,
  for a linear move that has the room, in (1.0, 1.7] (a "slow" move that goes too far);
- turn back (spinning): the turn reverses part-way, so the net turn is small;
- bend (linear moves): the path bows sideways by 5-20 % of the canvas;
- drift (spinning, growing, shrinking, still): the centroid wanders 2-12 % of the canvas.
A miss that would leave the canvas is dropped (the object keeps its world motion).
"""
from __future__ import annotations

import math
import random
from dataclasses import replace

from . import vocab
from .scene import Scene, Track

SCALE_RANGE, OVERSHOOT_RANGE = (0.15, 1.0), (1.0, 1.7)
BEND_RANGE, DRIFT_RANGE = (0.05, 0.20), (0.02, 0.12)  # fractions of the canvas
EDGE = 0.5  # px a near miss keeps free at the canvas edge (a world bounce touches the floor at 0.5)


def _inside(track: Track, W: int, H: int) -> bool:
    """Does the object stay whole on the canvas in every frame (the world keeps >= 0.5 px free)?"""
    boxes = [track.bbox(t) for t in range(len(track.centroid))]
    e = EDGE - 1e-9
    return all(e <= x0 and x1 <= W - e and e <= y0 and y1 <= H - e for x0, y0, x1, y1 in boxes)


def _scaled(o: Track, f: float) -> Track:
    """The motion's size times f about the first frame: displacement, turn, and log area."""
    (x0, y0), e0 = o.centroid[0], o.extent[0]
    return replace(o, centroid=tuple((x0 + f * (x - x0), y0 + f * (y - y0)) for x, y in o.centroid),
                   extent=tuple(e0 * (e / e0) ** f for e in o.extent), angle=tuple(f * a for a in o.angle))


def _miss(o: Track, rng: random.Random, W: int, H: int) -> Track:
    T = len(o.centroid)
    s = [t / (T - 1) for t in range(T)]
    kinds = ["scale"]
    if o.motion == "spinning":
        kinds.append("turn back")
    if o.motion in vocab.LINEAR_MOTIONS:
        kinds += ["bend", "overshoot"]
    if o.motion in ("spinning", "growing", "shrinking", "still"):
        kinds.append("drift")
    kind = rng.choice(kinds)
    if kind == "scale":
        return _scaled(o, rng.uniform(*SCALE_RANGE))
    if kind == "overshoot":
        return _scaled(o, rng.uniform(*OVERSHOOT_RANGE))
    if kind == "turn back":
        turn, back = rng.uniform(0.3, 0.7), rng.uniform(0.5, 1.5)  # where it turns back; how fast, relative
        total = o.angle[-1]
        return replace(o, angle=tuple(total * (si if si < turn else turn - back * (si - turn)) for si in s))
    (x0, y0), (x1, y1) = o.centroid[0], o.centroid[-1]
    if kind == "bend":
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        nx, ny = -(y1 - y0) / length, (x1 - x0) / length  # unit normal to the path
        b = rng.uniform(*BEND_RANGE) * min(W, H) * rng.choice([-1.0, 1.0])
        return replace(o, centroid=tuple((x + b * nx * math.sin(math.pi * si), y + b * ny * math.sin(math.pi * si))
                                         for (x, y), si in zip(o.centroid, s)))
    a = rng.uniform(0.0, 2 * math.pi)
    d = rng.uniform(*DRIFT_RANGE) * min(W, H)
    return replace(o, centroid=tuple((x + d * math.cos(a) * si, y + d * math.sin(a) * si)
                                     for (x, y), si in zip(o.centroid, s)))


def near_miss_chance(p) -> float:
    """`p` as a float in [0, 1] (the chance an object's motion is a near miss), else a ValueError."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"near-miss chance must be in [0, 1], got {p}")
    return p


def near_miss(scene: Scene, seed: int, p: float = 0.6) -> Scene:
    """`scene` with each object's motion redrawn as a near miss with chance `p` (deterministic in
    `seed`); colours, shapes, sizes, first frames and background are kept. A clip of one frame has
    no motion to miss and comes back unchanged."""
    p = near_miss_chance(p)
    if scene.num_frames < 2:
        return scene
    rng = random.Random(seed)
    objects = []
    for o in scene.objects:
        if rng.random() < p:
            m = _miss(o, rng, scene.width, scene.height)
            o = m if _inside(m, scene.width, scene.height) else o
        objects.append(o)
    return replace(scene, objects=tuple(objects))
