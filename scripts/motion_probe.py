"""How well do models make one motion? One-object prompts whose object makes it, judged.

    python scripts/motion_probe.py kinema/weights/default runs/x/model --motion spinning --prompts 40

The prompts are captions (detailed for even i, short for odd; held-out wording excluded) of the
first `--prompts` one-object world clips from seed PROBE_SEED on whose object makes `--motion`:
seeds no suite and no training pool uses. Video i of every model comes from the same generator
seed i, at the model's default settings (or `--guidance`, `--steps`, `--eta`). Per model it prints how many videos pass the judge, how
many pass its motion check, and the median turn |deg| of the object over the clip; for spinning
also the **reversals**: videos whose object turns one way and then the other (the cumulative turn
over frames 0-4, 0-8, 0-12, 0-16 steps by more than 10 degrees in both directions), which a
clip of the world never does. The first row is the clips themselves (every check must pass).
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from kinema.eval.judge import judge
from kinema.eval.measure import measure_video
from kinema.pipelines import KinemaPipeline
from kinema.world import make_clip
from kinema.world import vocab as V

PROBE_SEED = 3_100_000_000  # far from the suites' (2,000,000,000 + 10,000,000 k) and refine_dev's
PREFIXES = (5, 9, 13, 17)  # frames 0..4k: one latent frame of the 4x temporal autoencoder each
REVERSAL_DEG = 10.0


def probe_set(motion: str, n: int, tries: int = 20000) -> tuple[list[str], list[np.ndarray]]:
    """(prompts, the world clips they describe): the first n one-object clips from PROBE_SEED on
    whose object makes `motion`, captioned detailed for even i and short for odd i."""
    if motion not in V.MOTIONS:
        raise SystemExit(f"unknown motion {motion!r}; known: {', '.join(V.MOTIONS)}")
    prompts, clips = [], []
    for i in range(tries):
        clip = make_clip(PROBE_SEED + i, num_objects=1, exclude_words=V.HELD_OUT_WORDS)
        if clip.scene.objects[0].motion == motion:
            prompts.append(clip.text if len(prompts) % 2 == 0 else clip.short_text)
            clips.append(clip.frames)
            if len(prompts) == n:
                return prompts, clips
    raise SystemExit(f"only {len(prompts)} clips with {motion} in {tries} seeds")


def turn_curve(frames: np.ndarray, whole=None) -> list[float] | None:
    """The object's cumulative turn (deg) over frames 0..k-1 for k in PREFIXES; None unless
    exactly one object is seen in every prefix. `whole`: the video's observation, when the judge
    has already measured it (the last prefix is the whole video)."""
    curve = []
    for k in PREFIXES:
        if k > len(frames):
            break
        obs = whole if whole is not None and k == len(frames) else measure_video(frames[:k])
        if len(obs.objects) != 1:
            return None
        curve.append(obs.objects[0].rotation)
    return curve


def reverses(curve: list[float] | None) -> bool:
    if not curve:
        return False
    steps = np.diff([0.0, *curve])
    return bool((steps > REVERSAL_DEG).any() and (steps < -REVERSAL_DEG).any())


def score(videos: list[np.ndarray], prompts: list[str], motion: str) -> dict:
    passed = motion_ok = reversals = 0
    turns = []
    for frames, prompt in zip(videos, prompts):
        v = judge(frames, prompt)
        passed += v.passed
        motion_ok += any(c.attribute == "motion" and c.passed for c in v.checks)
        curve = turn_curve(frames, v.observation) if motion == "spinning" else None
        reversals += reverses(curve)
        objs = v.observation.objects
        turns.append(abs(objs[0].rotation) if len(objs) == 1 else 0.0)
    return {"pass": passed, "motion": motion_ok, "reversals": reversals,
            "median_turn": statistics.median(turns), "n": len(prompts)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model folders")
    ap.add_argument("--motion", default="spinning", help=f"one of {', '.join(V.MOTIONS)}")
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--guidance", type=float, help="guidance scale (default: each model's own)")
    ap.add_argument("--steps", type=int, help="sampling steps (default: each model's own)")
    ap.add_argument("--eta", type=float, help="fresh noise a sampling step, 0 = Euler (default: each model's own)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    prompts, clips = probe_set(a.motion, a.prompts)
    rows = [("world clips", score(clips, prompts, a.motion))]
    for model in a.models:
        pipe = KinemaPipeline.from_pretrained(model)
        videos = [np.asarray(pipe(p, generator=torch.Generator().manual_seed(i), guidance_scale=a.guidance,
                                  num_inference_steps=a.steps, eta=a.eta, output_type="uint8", progress=False).frames[0])
                  for i, p in enumerate(prompts)]
        rows.append((model, score(videos, prompts, a.motion)))
    settings = ", ".join(f"{k} {v}" for k, v in (("guidance", a.guidance), ("steps", a.steps), ("eta", a.eta)) if v is not None)
    print(f"{a.prompts} one-object prompts, {a.motion}" + (f" ({settings})" if settings else ""))
    print(f"{'':40s} {'pass':>6s} {'motion':>7s} {'median turn':>12s} {'reversals':>10s}")
    for name, r in rows:
        rev = f"{r['reversals']:10d}" if a.motion == "spinning" else f"{'':>10s}"
        print(f"{name:40s} {r['pass']:6d} {r['motion']:7d} {r['median_turn']:12.0f} {rev}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
