"""Composable diffusion (Liu et al. 2022) and regional prompting for two-object prompts: does
each object's own one-object prompt bind motions to objects? (docs/default-model.md: no.)

    python scripts/compose_objects.py kinema/weights/default --weights 0 1 2 --threads 2
    python scripts/compose_objects.py kinema/weights/default --regional 2:0 0.9:0 0.9:0.5 0.7:0 0.7:0.5

For every two-object prompt among the tuning prompts (shapes-v1-trained ids 200-299, as
scripts/tune_sampling.py), the prompt is parsed and each object gets a one-object prompt in trained
wording ("a small red circle moving left on a gray background"). The velocity is

    v = cfg(v(prompt), v(""), guidance) + W * sum_i (v(object_i) - v(""))

with the model's default guidance and steps, one video a prompt from the suite's seed (W = 0 is
the plain pipeline without binding guidance, video for video). Prints the judge's pass count per W.

`--regional T:A ...` instead gives each object its own half of the frame (regional prompting, as
MultiDiffusion and Regional Prompter do for images): while t >= T, the conditional velocity is

    v_c = A * v(prompt) + (1 - A) * (M_1 * v(object_1) + M_2 * v(object_2))

with M_1 / M_2 the left / right halves of the latent's columns, then CFG as usual; below T the
plain prompt. A one-object prompt is then asked for one object in its half, where one is all
there should be. T > 1 is the plain pipeline, video for video.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from kinema import flow
from kinema.data.loader import from_model_range
from kinema.eval.judge import judge
from kinema.eval.suite import suite_prompts, video_seed
from kinema.pipelines import KinemaPipeline
from kinema.world.parse import ObjectClaim, parse_prompt
from tune_sampling import TUNE_FIRST  # scripts/: the first tuning prompt (the test takes 0-199)

TUNE_COUNT = 100
OTHER_MOTIONS = {"still": "staying still", "bouncing": "bouncing", "spinning": "spinning",
                 "growing": "growing", "shrinking": "shrinking"}


def object_prompt(o: ObjectClaim, background: str | None) -> str:
    """One object's prompt in the training captions' wording."""
    motion = OTHER_MOTIONS.get(o.motion, f"moving {o.motion}") if o.motion else ""
    words = ["a", o.size or "", o.colour or "", o.shape, motion, f"on a {background} background" if background else ""]
    return " ".join(w for w in words if w)


def _texts(pipe: KinemaPipeline, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L, D) states and (n, L) mask, encoded one at a time as the pipeline does (same floats)."""
    encoded = [pipe.text_encoder.encode([t]) for t in texts]  # each padded to the encoder's max_length
    return torch.cat([e[0] for e in encoded]), torch.cat([e[1] for e in encoded])


def _sample(pipe: KinemaPipeline, seed: int, velocity_for) -> np.ndarray:
    """(T, H, W, 3) uint8: the pipeline's noise, steps, shift, eta and decode around `velocity_for(shape)`,
    which returns the velocity function (x, t) -> v for latents of that shape."""
    d = pipe.defaults
    shape = (1, *pipe.vae.latent_shape(d.num_frames, d.height, d.width))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=generator)
    tokens = math.prod(s // p for s, p in zip(shape[2:], pipe.dit.cfg.patch_size))
    z = flow.euler_sample(velocity_for(shape), noise, d.num_inference_steps,
                          shift=d.shift or flow.timestep_shift_for(tokens), eta=d.eta, generator=generator)
    return from_model_range(pipe.vae.decode(pipe.vae.denormalize(z)))[0]


@torch.no_grad()
def composed_video(pipe: KinemaPipeline, prompt: str, seed: int, weight: float):
    """(T, H, W, 3) uint8: the pipeline's sampling with the composed velocity above."""
    claims = parse_prompt(prompt)
    texts = [prompt, ""] + ([object_prompt(o, claims.background) for o in claims.objects] if weight else [])
    states, mask = _texts(pipe, texts)  # (n, L, D), (n, L)
    n, guidance = len(texts), pipe.defaults.guidance_scale

    def velocity(x, t):
        v = pipe.dit(x.expand(n, *x.shape[1:]), t.expand(n), states, mask)  # (n, C, T', h, w)
        out = flow.cfg_combine(v[:1], v[1:2], guidance)
        return out + weight * (v[2:] - v[1:2]).sum(0, keepdim=True)

    return _sample(pipe, seed, lambda shape: velocity)


@torch.no_grad()
def regional_video(pipe: KinemaPipeline, prompt: str, seed: int, t_switch: float, alpha: float):
    """(T, H, W, 3) uint8: the pipeline's sampling with the regional velocity above."""
    claims = parse_prompt(prompt)
    if len(claims.objects) != 2:
        raise ValueError(f"regional prompting here splits two objects; {prompt!r} has {len(claims.objects)}")
    states, mask = _texts(pipe, [prompt, ""] + [object_prompt(o, claims.background) for o in claims.objects])
    guidance = pipe.defaults.guidance_scale

    def velocity_for(shape):
        left = torch.zeros(shape)
        left[..., : shape[-1] // 2] = 1  # the first object's half: the left latent columns

        def velocity(x, t):
            if float(t[0]) < t_switch:
                v = pipe.dit(x.expand(2, *x.shape[1:]), t.expand(2), states[:2], mask[:2])
                return flow.cfg_combine(v[:1], v[1:], guidance)
            v = pipe.dit(x.expand(4, *x.shape[1:]), t.expand(4), states, mask)  # prompt, "", object 1, object 2
            v_c = alpha * v[:1] + (1 - alpha) * (left * v[2:3] + (1 - left) * v[3:4])
            return flow.cfg_combine(v_c, v[1:2], guidance)
        return velocity

    return _sample(pipe, seed, velocity_for)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--prompts", type=int, default=TUNE_COUNT, help="tuning prompts to draw the two-object ones from")
    ap.add_argument("--regional", nargs="+", metavar="T:A",
                    help="regional prompting settings instead of --weights: while t >= T, weight A on the whole prompt")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = KinemaPipeline.from_pretrained(a.model)
    prompts = [p for p in suite_prompts("shapes-v1-trained", TUNE_FIRST + a.prompts)[TUNE_FIRST:] if p.num_objects == 2]
    if a.regional:
        settings = {r: (lambda r: lambda p, seed: regional_video(pipe, p, seed, *map(float, r.split(":"))))(r)
                    for r in a.regional}
    else:
        settings = {w: (lambda w: lambda p, seed: composed_video(pipe, p, seed, w))(w) for w in a.weights}
    passed = {k: 0 for k in settings}
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        for k, video in settings.items():
            passed[k] += judge(video(p.text, video_seed(p.id, 0)), p.text).passed
        print(f"{i + 1}/{len(prompts)} {time.perf_counter() - t0:.0f} s {passed}", flush=True)
    for k in settings:
        print(json.dumps({"regional" if a.regional else "weight": k, "two_object_prompts": len(prompts),
                          "passed": passed[k]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
