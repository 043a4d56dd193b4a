"""A shapes-world scene: what is in a clip and where every object is in every frame.

`sample_scene(seed, ...)` is the only source of randomness for a clip. It draws from Python's
`random.Random(seed)` and uses only `.random()` (Mersenne Twister doubles, stable across Python
versions and machines), so a seed makes the same scene, and so the same pixels, everywhere.

Coordinates: x to the right, y down, in pixels; pixel (row i, col j) covers [j, j+1) x [i, i+1).
Angles are degrees; extents are the diameter (circle), side (square) or base = height (triangle).
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, replace
from typing import Mapping

from . import vocab

MARGIN = 1.0  # px kept free between an object and the canvas edge


@dataclass(frozen=True)
class Track:
    """One object's attributes and its per-frame geometry (T entries each)."""

    colour: str
    shape: str
    size: str  # "small" | "big": class of the first frame's extent
    motion: str  # one of vocab.MOTIONS
    speed: str | None  # "slow" | "quick" | None; only for axis motions
    centroid: tuple[tuple[float, float], ...]  # (x, y) of the area centroid
    extent: tuple[float, ...]
    angle: tuple[float, ...]

    def vertices(self, t: int) -> list[tuple[float, float]]:
        """Polygon vertices (absolute px) at frame t; empty for a circle."""
        return [(self.centroid[t][0] + dx, self.centroid[t][1] + dy)
                for dx, dy in shape_offsets(self.shape, self.extent[t], self.angle[t])]

    def bbox(self, t: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the drawn shape at frame t."""
        cx, cy = self.centroid[t]
        if self.shape == "circle":
            r = self.extent[t] / 2
            return (cx - r, cy - r, cx + r, cy + r)
        vs = self.vertices(t)
        xs, ys = [v[0] for v in vs], [v[1] for v in vs]
        return (min(xs), min(ys), max(xs), max(ys))

    def area(self, t: int) -> float:
        return vocab.SHAPE_FILL[self.shape] * self.extent[t] ** 2


@dataclass(frozen=True)
class Scene:
    seed: int
    width: int
    height: int
    num_frames: int
    fps: float
    background: str
    objects: tuple[Track, ...]


def shape_offsets(shape: str, extent: float, angle: float) -> list[tuple[float, float]]:
    """Vertices relative to the area centroid, rotated by `angle` degrees (counter-clockwise)."""
    if shape == "circle":
        return []
    h = extent / 2
    if shape == "square":
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    else:  # isosceles triangle, apex up; its centroid is 2/3 of the height below the apex
        pts = [(0.0, -2 * extent / 3), (h, extent / 3), (-h, extent / 3)]
    if angle == 0:
        return pts
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # y points down, so a counter-clockwise turn on screen is (x, y) -> (x c + y s, -x s + y c)
    return [(x * c + y * s, -x * s + y * c) for x, y in pts]


def _box(shape: str, extent: float) -> tuple[float, float, float, float]:
    """Unrotated bounding box offsets (x_min, x_max, y_min, y_max) from the centroid."""
    if shape == "triangle":
        return (-extent / 2, extent / 2, -2 * extent / 3, extent / 3)
    return (-extent / 2, extent / 2, -extent / 2, extent / 2)


def circumradius(shape: str, extent: float) -> float:
    return {"circle": 0.5, "square": math.sqrt(0.5), "triangle": 2 / 3}[shape] * extent


class _Rng:
    """The only random calls the world makes; all built on random.Random.random()."""

    def __init__(self, seed: int):
        self._r = random.Random(seed)

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self._r.random()

    def choice(self, seq):
        seq = list(seq)
        return seq[min(int(self._r.random() * len(seq)), len(seq) - 1)]

    def chance(self, p: float) -> bool:
        return self._r.random() < p

    def sample(self, seq, k: int) -> list:
        pool, out = list(seq), []
        for _ in range(k):
            out.append(pool.pop(min(int(self._r.random() * len(pool)), len(pool) - 1)))
        return out


# Displacement along the axis, as a fraction of the canvas extent on that axis. WORLD.md:
# >= 0.35 always, "slowly" 0.35-0.5, "quickly" >= 0.6; we sample inside with a margin.
AXIS_SPEED_RANGE = {"slow": (0.38, 0.47), None: (0.40, 0.58), "quick": (0.63, 0.75)}
DIAGONAL_RANGE = (0.28, 0.42)  # per axis; WORLD.md: >= 0.25
SPIN_DEGREES = (115.0, 240.0)  # WORLD.md: >= 90; <= 30 deg a frame so a square's turn is trackable
GROW_AREA = (2.4, 3.0)  # WORLD.md: >= 2.0
SHRINK_AREA = (0.30, 0.42)  # WORLD.md: <= 0.5
OFF_AXIS_DRIFT = 0.03  # WORLD.md allows <= 0.1
BOUNCE_DRIFT = 0.04  # WORLD.md allows <= 0.1


def allowed_motions(shape: str, num_frames: int) -> list[str]:
    """Motions a clip of this length can show: one frame is a picture (still only); bouncing
    and spinning need at least 5 frames to be visible; a circle never spins."""
    if num_frames == 1:
        return ["still"]
    motions = list(vocab.LINEAR_MOTIONS) + ["growing", "shrinking", "still"]
    if num_frames >= 5:
        motions.append("bouncing")
        if shape != "circle":
            motions.append("spinning")
    return motions


def _choose_motion(rng: _Rng, shape: str, num_frames: int) -> str:
    # Uniform over motion families, then over directions, so axis moves are not 8x rarer.
    allowed = allowed_motions(shape, num_frames)
    families = [[m for m in vocab.AXIS_MOTIONS if m in allowed],
                [m for m in vocab.DIAGONAL_MOTIONS if m in allowed]]
    families += [[m] for m in ("bouncing", "spinning", "growing", "shrinking", "still") if m in allowed]
    return rng.choice(rng.choice([f for f in families if f]))


def _range_start(rng: _Rng, lo: float, hi: float) -> float | None:
    return None if hi < lo else rng.uniform(lo, hi)


def _sample_track(rng: _Rng, colour: str, W: int, H: int, T: int) -> Track | None:
    """One object, or None when the drawn attributes do not fit the canvas (caller retries)."""
    shape = rng.choice(vocab.SHAPE_WORDS)
    size = rng.choice(vocab.SIZE_WORDS)
    motion = _choose_motion(rng, shape, T)
    e0 = rng.uniform(*vocab.SIZE_RANGES[size]) * min(W, H)
    x_min, x_max, y_min, y_max = _box(shape, e0)
    s = [t / (T - 1) if T > 1 else 0.0 for t in range(T)]
    speed = None
    extent = [e0] * T
    angle = [0.0] * T

    def fit(lo_off: float, hi_off: float, size_: int, travel: float = 0.0):
        """Start coordinate so that [start+lo_off, start+hi_off] stays inside, moving by travel."""
        return _range_start(rng, MARGIN - lo_off - min(0.0, travel),
                            size_ - MARGIN - hi_off - max(0.0, travel))

    if motion in vocab.LINEAR_MOTIONS:
        ux, uy = vocab.DIRECTIONS[motion]
        if motion in vocab.AXIS_MOTIONS:
            speed = rng.choice(["slow", None, "quick"])
            lo, hi = AXIS_SPEED_RANGE[speed]
            along, other = (W, H) if ux else (H, W)
            room = along - (x_max - x_min if ux else y_max - y_min) - 2 * MARGIN
            frac = _range_start(rng, lo, min(hi, room / along))
            if frac is None:
                return None
            drift = rng.uniform(-OFF_AXIS_DRIFT, OFF_AXIS_DRIFT) * other
            dx, dy = (ux * frac * W, drift) if ux else (drift, uy * frac * H)
        else:
            fx, fy = rng.uniform(*DIAGONAL_RANGE), rng.uniform(*DIAGONAL_RANGE)
            dx, dy = ux * fx * W, uy * fy * H
        x0, y0 = fit(x_min, x_max, W, dx), fit(y_min, y_max, H, dy)
        if x0 is None or y0 is None:
            return None
        centroid = [(x0 + dx * si, y0 + dy * si) for si in s]
    elif motion == "bouncing":
        dx = rng.uniform(-BOUNCE_DRIFT, BOUNCE_DRIFT) * W
        x0 = fit(x_min, x_max, W, dx)
        y_floor = H - y_max - 0.5  # centroid height when the object touches the bottom edge
        y0 = _range_start(rng, MARGIN - y_min, 0.45 * H)
        if x0 is None or y0 is None or y_floor - y0 < 0.25 * H:
            return None
        ys = _bounce(y0, y_floor, T, hit_frac=rng.uniform(0.35, 0.6), restitution=rng.uniform(0.55, 0.8))
        centroid = [(x0 + dx * si, y) for si, y in zip(s, ys)]
    else:
        if motion == "growing":
            e1 = e0 * math.sqrt(rng.uniform(*GROW_AREA))
        elif motion == "shrinking":
            e1 = e0 * math.sqrt(rng.uniform(*SHRINK_AREA))
        else:
            e1 = e0
        extent = [e0 + (e1 - e0) * si for si in s]
        if motion == "spinning":
            r = circumradius(shape, e0)
            box = (-r, r, -r, r)
            total = rng.uniform(*spin_range(T))
            total *= rng.choice([-1.0, 1.0])
            angle = [total * si for si in s]
        else:
            box = _box(shape, max(e0, e1))
        x0, y0 = fit(box[0], box[1], W), fit(box[2], box[3], H)
        if x0 is None or y0 is None:
            return None
        centroid = [(x0, y0)] * T
    return Track(colour, shape, size, motion, speed, tuple(centroid), tuple(extent), tuple(angle))


def _bounce(y0: float, y_floor: float, T: int, hit_frac: float, restitution: float) -> list[float]:
    """Fall from rest under constant gravity, hit the floor exactly on a frame, rebound with
    speed x restitution, repeat. The first contact lands on a frame so the bounce is seen."""
    k = min(max(1, round(hit_frac * (T - 1))), T - 2)
    g = 2 * (y_floor - y0) / k**2
    ys, t_hit, v = [], float(k), restitution * g * k  # v: upward speed just after the bounce
    for t in range(T):
        if t <= k:
            ys.append(y0 + 0.5 * g * t * t)
            continue
        # A later bounce happened before frame t; bounce times sum to a finite limit, past which
        # (a flight under 1e-9 frames) the object rests on the floor.
        while t - t_hit > 2 * v / g >= 1e-9:
            t_hit, v = t_hit + 2 * v / g, v * restitution
        if 2 * v / g < 1e-9:
            ys.append(y_floor)
            continue
        tau = t - t_hit
        ys.append(y_floor - v * tau + 0.5 * g * tau * tau)
    return ys


def _overlap_fraction(a: Track, b: Track, W: int, H: int) -> float:
    """Worst frame's overlap area / the smaller object's area (WORLD.md: must be <= 10%)."""
    from .render import coverage  # local: render imports this module

    worst = 0.0
    for t in range(len(a.centroid)):
        (ax, ay), (bx, by) = a.centroid[t], b.centroid[t]
        reach = circumradius(a.shape, a.extent[t]) + circumradius(b.shape, b.extent[t])
        if math.hypot(ax - bx, ay - by) >= reach:
            continue
        (sa, ca), (sb, cb) = coverage(a, t, W, H, ss=2), coverage(b, t, W, H, ss=2)
        ys = slice(max(sa[0].start, sb[0].start), min(sa[0].stop, sb[0].stop))
        xs = slice(max(sa[1].start, sb[1].start), min(sa[1].stop, sb[1].stop))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        pa = ca[ys.start - sa[0].start: ys.stop - sa[0].start, xs.start - sa[1].start: xs.stop - sa[1].start]
        pb = cb[ys.start - sb[0].start: ys.stop - sb[0].start, xs.start - sb[1].start: xs.stop - sb[1].start]
        inter = float((pa * pb).sum())
        worst = max(worst, inter / max(1e-6, min(ca.sum(), cb.sum())))
    return worst


MAX_OVERLAP = 0.02  # we keep well under WORLD.md's 10% so every object stays measurable


def closest_approach(scene: Scene) -> float:
    """How near a scene's two objects come, in pixels: the smallest distance between their
    circumcircles over the frames (negative: the circles overlap, the shapes may not); inf with
    one object. A training pool may leave out scenes whose objects pass close (data.min_gap): the
    model's two-object videos fail most where their objects come close (docs/default-model.md)."""
    best = math.inf
    for a, b in itertools.combinations(scene.objects, 2):
        for (ax, ay), (bx, by), ea, eb in zip(a.centroid, b.centroid, a.extent, b.extent):
            best = min(best, math.hypot(ax - bx, ay - by) - circumradius(a.shape, ea) - circumradius(b.shape, eb))
    return best


def _draw_background(rng: _Rng) -> str:
    return rng.choice(vocab.BACKGROUNDS)


def _draw_count(rng: _Rng) -> int:
    return rng.choice([1, 2])


def num_objects_of(seed: int) -> int:
    """How many objects sample_scene(seed) draws (when not told), without placing any: the same
    first two draws (background, then count). A loader uses it to weight a pool by object count."""
    rng = _Rng(seed)
    _draw_background(rng)
    return _draw_count(rng)


def spin_range(num_frames: int) -> tuple[float, float]:
    """The total turn (degrees) a spinning object of a `num_frames` clip is drawn from."""
    return SPIN_DEGREES[0], min(SPIN_DEGREES[1], 30.0 * (num_frames - 1))


SPIN_SHAPES = ("square", "triangle")  # the shapes that can visibly spin (WORLD.md)


def check_spin_degrees(degrees, name: str = "spin degrees"):
    """`degrees` as (lo, hi), or as {shape: (lo, hi)} when given per shape (a table of
    SPIN_SHAPES; a shape left out keeps the world's turns); a ValueError naming `name` unless each
    range is two numbers with 90 < lo <= hi (WORLD.md: a spin turns >= 90 degrees over the clip)."""
    if isinstance(degrees, Mapping):
        unknown = sorted(set(degrees) - set(SPIN_SHAPES))
        if unknown or not degrees:
            raise ValueError(f"{name} per shape takes {' and '.join(SPIN_SHAPES)} (the shapes that spin), "
                             f"got {sorted(degrees) or 'none'}")
        return {shape: check_spin_degrees(degrees[shape], f"{name}.{shape}") for shape in SPIN_SHAPES
                if shape in degrees}
    if (len(degrees) != 2 or not all(isinstance(v, (int, float)) for v in degrees)
            or not 90 < degrees[0] <= degrees[1]):
        raise ValueError(f"{name} must be [lo, hi] with 90 < lo <= hi (WORLD.md: a spin turns >= 90 "
                         f"degrees), got {degrees}")
    return float(degrees[0]), float(degrees[1])


def spin_key(degrees) -> tuple:
    """A flat, hashable form of checked spin degrees ((lo, hi) or {shape: (lo, hi)}), for cache keys."""
    if isinstance(degrees, Mapping):
        return tuple(v for shape in sorted(degrees) for v in (shape, *degrees[shape]))
    return tuple(degrees)


SPIN_DIRECTIONS = {"counterclockwise": 1.0, "clockwise": -1.0}  # the sign of a Track's angle


def check_spin_direction(direction, name: str = "spin direction") -> str | None:
    """`direction` if it is None or one of SPIN_DIRECTIONS ("both" reads as None), else a ValueError."""
    if direction is None or direction == "both":
        return None
    if direction not in SPIN_DIRECTIONS:
        raise ValueError(f"{name} must be 'both', {' or '.join(map(repr, SPIN_DIRECTIONS))}, got {direction!r}")
    return direction


def respin(scene: Scene, degrees=None, direction: str | None = None) -> Scene:
    """The scene with each spinning object's total turn mapped linearly from spin_range onto
    `degrees` ((lo, hi) for every shape, or {shape: (lo, hi)}: a shape not named keeps its turn;
    None: kept) and turned the `direction` way ("counterclockwise" or "clockwise"; None: the
    world's own, either). The per-frame schedule is kept and nothing else changes (a spinning
    object's box is its circumradius, so the layout stays valid). WORLD.md asks only for >= 90
    degrees either way; a training set may want slower turns, one way only, or squares slower than
    triangles (docs/default-model.md, sessions 22, 24 and 37)."""
    degrees = check_spin_degrees(degrees) if degrees is not None else None
    direction = check_spin_direction(direction)
    sign = SPIN_DIRECTIONS[direction] if direction else None
    a, b = spin_range(scene.num_frames)
    objects = []
    for o in scene.objects:
        total = o.angle[-1]
        if o.motion == "spinning" and total:
            scale = 1.0
            turns = degrees.get(o.shape) if isinstance(degrees, Mapping) else degrees
            if turns is not None:
                lo, hi = turns
                u = (abs(total) - a) / (b - a) if b > a else 0.0
                scale = (lo + u * (hi - lo)) / abs(total)
            if sign is not None and math.copysign(1.0, total) != sign:
                scale = -scale
            o = replace(o, angle=tuple(x * scale for x in o.angle))
        objects.append(o)
    return replace(scene, objects=tuple(objects))


def sample_scene(seed: int, width: int = 64, height: int = 64, num_frames: int = 17,
                 fps: float = 8.0, num_objects: int | None = None) -> Scene:
    """Draw one clip's scene from its seed. Same arguments, same scene, on any machine."""
    if width < 32 or height < 32:
        raise ValueError(f"the shapes world needs width and height >= 32, got {width}x{height}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_objects not in (None, 1, 2):
        raise ValueError(f"num_objects must be 1 or 2 in shapes world v1, got {num_objects}")
    rng = _Rng(seed)
    background = _draw_background(rng)
    n = num_objects or _draw_count(rng)
    colours = rng.sample(vocab.OBJECT_COLOURS, n)
    objects: list[Track] = []
    for colour in colours:
        for _ in range(1000):
            tr = _sample_track(rng, colour, width, height, num_frames)
            if tr is not None and all(_overlap_fraction(tr, o, width, height) <= MAX_OVERLAP for o in objects):
                objects.append(tr)
                break
        else:  # pragma: no cover - would mean the size/motion ranges cannot fit the canvas
            raise RuntimeError(f"could not place object {len(objects) + 1} for seed {seed}")
    return Scene(seed, width, height, num_frames, float(fps), background, tuple(objects))
