"""Composable diffusion (Liu et al. 2022) for two-object prompts: does adding each object's own
one-object prompt to the guidance bind motions to objects? (docs/default-model.md: no.)

    python scripts/compose_objects.py kinema/weights/default --weights 0 1 2 --threads 2

For every two-object prompt among the tuning prompts (shapes-v1-trained ids 200-299, as
scripts/tune_sampling.py), the prompt is parsed and each object gets a one-object prompt in trained
wording ("a small red circle moving left on a gray background"). The velocity is

    v = cfg(v(prompt), v(""), guidance) + W * sum_i (v(object_i) - v(""))

with the model's default guidance and steps, one video a prompt from the suite's seed (W = 0 is
the plain pipeline, video for video). Prints the judge's pass count per W.
"""
from __future__ import annotations

import argparse
import json
import math
import time

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


@torch.no_grad()
def composed_video(pipe: KinemaPipeline, prompt: str, seed: int, weight: float):
    """(T, H, W, 3) uint8: the pipeline's sampling with the composed velocity above."""
    d = pipe.defaults
    claims = parse_prompt(prompt)
    texts = [prompt, ""] + ([object_prompt(o, claims.background) for o in claims.objects] if weight else [])
    encoded = [pipe.text_encoder.encode([t]) for t in texts]  # one at a time, as the pipeline: same floats
    states, mask = torch.cat([e[0] for e in encoded]), torch.cat([e[1] for e in encoded])  # (n, L, D), (n, L)
    shape = (1, *pipe.vae.latent_shape(d.num_frames, d.height, d.width))
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    tokens = math.prod(s // p for s, p in zip(shape[2:], pipe.dit.cfg.patch_size))
    n = len(texts)

    def velocity(x, t):
        v = pipe.dit(x.expand(n, *x.shape[1:]), t.expand(n), states, mask)  # (n, C, T', h, w)
        out = flow.cfg_combine(v[:1], v[1:2], d.guidance_scale)
        return out + weight * (v[2:] - v[1:2]).sum(0, keepdim=True)

    z = flow.euler_sample(velocity, noise, d.num_inference_steps, shift=d.shift or flow.timestep_shift_for(tokens))
    return from_model_range(pipe.vae.decode(pipe.vae.denormalize(z)))[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--prompts", type=int, default=TUNE_COUNT, help="tuning prompts to draw the two-object ones from")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = KinemaPipeline.from_pretrained(a.model)
    prompts = [p for p in suite_prompts("shapes-v1-trained", TUNE_FIRST + a.prompts)[TUNE_FIRST:] if p.num_objects == 2]
    passed = {w: 0 for w in a.weights}
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        for w in a.weights:
            passed[w] += judge(composed_video(pipe, p.text, video_seed(p.id, 0), w), p.text).passed
        print(f"{i + 1}/{len(prompts)} {time.perf_counter() - t0:.0f} s {passed}", flush=True)
    for w in a.weights:
        print(json.dumps({"weight": w, "two_object_prompts": len(prompts), "passed": passed[w]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
