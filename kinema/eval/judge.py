"""The exact judge of prompt adherence in the shapes world.

`judge(frames, prompt)` parses the prompt (world vocabulary only), measures the video from its
pixels (`measure.py`), and checks, with the thresholds of WORLD.md: the object count, the
background, and per object: present, colour, shape, size class and motion. Every check carries
the value it measured. The same checks run on a clip's ground truth (`observe_ground_truth`), so
"does this caption state anything false about this clip" has an exact answer to compare with.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..world import vocab
from ..world.parse import ObjectClaim, PromptClaims, parse_prompt
from .measure import ObjectObservation, VideoObservation, measure_video

# Thresholds, as fractions of the canvas extent on the named axis (WORLD.md "Motions").
AXIS_MIN, OFF_AXIS_MAX = 0.35, 0.10
DIAGONAL_MIN = 0.25
SLOW_RANGE, QUICK_MIN = (0.35, 0.50), 0.60
LINEARITY_MAX = 0.10  # "near-constant velocity": farthest point from the constant-speed path
BOUNCE_DRIFT_MAX, BOUNCE_DESCENT_MIN, BOUNCE_REBOUND_MIN, BOUNCE_FLOOR = 0.10, 0.15, 0.03, 0.90
SPIN_STILL_MAX, SPIN_MIN_DEG = 0.05, 90.0
GROW_STILL_MAX, GROW_MIN, SHRINK_MAX = 0.05, 2.0, 0.5
STILL_MAX, STILL_AREA, STILL_TURN_MAX = 0.02, (0.8, 1.25), 20.0
ATTRIBUTE_WEIGHT = {"colour": 8, "shape": 4, "motion": 2, "size": 1}  # for matching objects


@dataclass
class Check:
    check: str  # e.g. "object 1 motion"
    attribute: str  # count | background | present | colour | shape | size | motion
    expected: str
    measured: str
    passed: bool
    object: int | None = None
    value: dict | None = None  # the numbers behind `measured`


def _track(o: ObjectObservation, W: int, H: int) -> dict:
    """Canvas-normalised motion measurements of one object (the values behind a motion check)."""
    ts = np.nonzero(o.present)[0]
    c = o.centroid[ts] / np.array([W, H])  # (n, 2)
    first, last = c[0], c[-1]
    disp = last - first
    frac = (ts - ts[0]) / max(1, ts[-1] - ts[0])
    lerp = first + frac[:, None] * disp  # constant-velocity path, (n, 2)
    # The bounce: the first frame that reaches the lowest level (a ball that bounces twice
    # touches the floor again later, maybe on the last frame), and how far it rises after it.
    k = int(np.nonzero(c[:, 1] >= c[:, 1].max() - 0.02)[0][0])
    rebound = float(c[k, 1] - c[k:, 1].min())
    return {
        "dx": float(disp[0]), "dy": float(disp[1]),
        "max_excursion": float(np.abs(c - first).max()),
        "linearity_error": float(np.abs(c - lerp).max()),
        "area_ratio": float(o.area[ts[-1]] / o.area[ts[0]]),
        "rotation_deg": float(o.rotation),
        "start_y": float(first[1]), "descent": float(c[k, 1] - first[1]), "rebound": rebound,
        "lowest_bottom": float(o.bottom[ts[k]] / H),
    }


def motion_holds(motion: str, speed: str | None, m: dict, shape: str) -> bool:
    """Does a measured track (`_track`) show `motion` (with `speed`) as WORLD.md defines it?"""
    if motion in vocab.LINEAR_MOTIONS:
        ux, uy = vocab.DIRECTIONS[motion]
        if m["linearity_error"] > LINEARITY_MAX:
            return False
        if motion in vocab.AXIS_MOTIONS:
            along, cross = (ux * m["dx"], m["dy"]) if ux else (uy * m["dy"], m["dx"])
            ok = along >= AXIS_MIN and abs(cross) <= OFF_AXIS_MAX
        else:
            along = math.hypot(m["dx"], m["dy"])
            ok = ux * m["dx"] >= DIAGONAL_MIN and uy * m["dy"] >= DIAGONAL_MIN
        if speed == "slow":
            ok = ok and SLOW_RANGE[0] <= along <= SLOW_RANGE[1]
        elif speed == "quick":
            ok = ok and along >= QUICK_MIN
        return ok
    if motion == "bouncing":
        return (m["start_y"] < 0.5 and m["descent"] >= BOUNCE_DESCENT_MIN
                and m["rebound"] >= BOUNCE_REBOUND_MIN and m["lowest_bottom"] >= BOUNCE_FLOOR
                and abs(m["dx"]) <= BOUNCE_DRIFT_MAX)
    if motion == "spinning":
        return m["max_excursion"] <= SPIN_STILL_MAX and abs(m["rotation_deg"]) >= SPIN_MIN_DEG
    if motion == "growing":
        return m["max_excursion"] <= GROW_STILL_MAX and m["area_ratio"] >= GROW_MIN
    if motion == "shrinking":
        return m["max_excursion"] <= GROW_STILL_MAX and m["area_ratio"] <= SHRINK_MAX
    if motion == "still":
        turn_ok = shape == "circle" or abs(m["rotation_deg"]) <= STILL_TURN_MAX
        return (m["max_excursion"] <= STILL_MAX and STILL_AREA[0] <= m["area_ratio"] <= STILL_AREA[1]
                and turn_ok)
    raise ValueError(f"unknown motion {motion!r}")


def describe_motion(m: dict, shape: str) -> str:
    """The first motion (with speed) the track satisfies, for the report; 'unclear' if none."""
    for motion in vocab.MOTIONS:
        if motion_holds(motion, None, m, shape):
            for speed in ("slow", "quick"):
                if motion in vocab.AXIS_MOTIONS and motion_holds(motion, speed, m, shape):
                    return f"{motion} ({speed})"
            return motion
    return "unclear"


def size_class(o: ObjectObservation, W: int, H: int) -> tuple[str, float]:
    t = int(np.nonzero(o.present)[0][0])  # size words describe the first frame
    ratio = o.extent(t) / min(W, H)
    return ("small" if ratio < vocab.SIZE_BOUNDARY else "big"), ratio


def _object_checks(n: int, claim: ObjectClaim, o: ObjectObservation, W: int, H: int) -> list[Check]:
    checks = [Check(f"object {n} present", "present", "yes", "yes", True, n)]
    if claim.colour:
        checks.append(Check(f"object {n} colour", "colour", claim.colour, o.colour, claim.colour == o.colour,
                            n, {"rgb": [round(v, 1) for v in o.rgb]}))
    checks.append(Check(f"object {n} shape", "shape", claim.shape, o.shape, claim.shape == o.shape, n,
                        {"h3": round(o.shape_features[0], 3), "h4": round(o.shape_features[1], 3)}))
    if claim.size:
        cls, ratio = size_class(o, W, H)
        checks.append(Check(f"object {n} size", "size", claim.size, cls, cls == claim.size, n,
                            {"extent_over_min_side": round(ratio, 3)}))
    if claim.motion:
        m = _track(o, W, H)
        expected = claim.motion + (f" ({claim.speed})" if claim.speed else "")
        checks.append(Check(f"object {n} motion", "motion", expected, describe_motion(m, o.shape),
                            motion_holds(claim.motion, claim.speed, m, o.shape), n,
                            {k: round(v, 3) for k, v in m.items()}))
    return checks


def _score(checks: list[Check]) -> int:
    return sum(ATTRIBUTE_WEIGHT.get(c.attribute, 0) for c in checks if c.passed)


@dataclass
class Verdict:
    prompt: str
    passed: bool
    checks: list[Check]
    claims: PromptClaims
    observation: VideoObservation

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> dict:
        obs = self.observation
        return {
            "prompt": self.prompt, "spec": vocab.SPEC_VERSION, "pass": self.passed,
            "parsed": {"objects": [asdict(o) for o in self.claims.objects], "background": self.claims.background},
            "measured": {"width": obs.width, "height": obs.height, "num_frames": obs.num_frames,
                         "background": obs.background, "objects": [o.colour for o in obs.objects]},
            "checks": [{k: v for k, v in asdict(c).items() if v is not None} for c in self.checks],
        }


def judge_observation(obs: VideoObservation, prompt: str | PromptClaims) -> Verdict:
    """Check what `prompt` claims against an observation (measured or ground truth)."""
    claims = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    W, H = obs.width, obs.height
    checks = [Check("object count", "count", str(len(claims.objects)), str(len(obs.objects)),
                    len(claims.objects) == len(obs.objects))]
    if claims.background:
        checks.append(Check("background", "background", claims.background, obs.background,
                            claims.background == obs.background,
                            value={"rgb": [round(v, 1) for v in obs.background_rgb]}))
    # Assign each claimed object to a distinct observed one (or none), best total agreement.
    slots = list(range(len(obs.objects))) + [None] * len(claims.objects)
    best: list[Check] | None = None
    for perm in dict.fromkeys(itertools.permutations(slots, len(claims.objects))):
        cand = []
        for n, (claim, j) in enumerate(zip(claims.objects, perm), 1):
            if j is None:
                cand.append(Check(f"object {n} present", "present", "yes", "no", False, n))
            else:
                cand += _object_checks(n, claim, obs.objects[j], W, H)
        if best is None or _score(cand) > _score(best):
            best = cand
    checks += best or []
    return Verdict(claims.text, all(c.passed for c in checks), checks, claims, obs)


def judge(frames: np.ndarray, prompt: str | PromptClaims) -> Verdict:
    """Does this (T, H, W, 3) uint8 video show what the prompt says? Measured from pixels only."""
    claims = parse_prompt(prompt) if isinstance(prompt, str) else prompt  # vocabulary errors first
    return judge_observation(measure_video(frames), claims)


def observe_ground_truth(gt: dict) -> VideoObservation:
    """The observation a perfect measurement would make of a clip, from its ground truth."""
    W, H, T = gt["width"], gt["height"], gt["num_frames"]
    objects = []
    for o in gt["objects"]:
        extent = np.asarray(o["extent"], dtype=float)
        objects.append(ObjectObservation(
            colour=o["colour"], rgb=tuple(float(v) for v in vocab.OBJECT_COLOURS[o["colour"]]),
            shape=o["shape"], shape_features=(float("nan"), float("nan")),
            present=np.ones(T, dtype=bool), area=vocab.SHAPE_FILL[o["shape"]] * extent ** 2,
            centroid=np.asarray(o["centroid"], dtype=float), bottom=np.asarray([b[3] for b in o["bbox"]]),
            rotation=0.0 if o["shape"] == "circle" else float(o["angle"][-1] - o["angle"][0])))
    bg = gt["background"]
    return VideoObservation(W, H, T, bg, tuple(float(v) for v in vocab.BACKGROUNDS[bg]), objects)


def ground_truth_motions(gt: dict) -> list[str]:
    """What the judge would read as each object's motion (with speed) from a clip's ground truth,
    in its objects' order: describe_motion of the exact track, e.g. "right (slow)", "spinning" or
    "unclear" (kinema.world.nearmiss's clips: a label as the judge draws the line, not the caption)."""
    obs = observe_ground_truth(gt)
    return [describe_motion(_track(o, obs.width, obs.height), o.shape) for o in obs.objects]
