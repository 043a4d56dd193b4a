"""Where in the trajectory do videos go wrong? Start the sampler from the prompt's own world clip.

For each tuning prompt (ids 200.. of shapes-v1-trained, never the test's 0-199), the world clip its
caption describes is encoded, noised to t0 with the noise the pipeline would draw for the prompt's
first video, x = (1 - t0) z + t0 noise (SDEdit, Meng et al. 2022), and integrated to t = 0 over the
default sampler's times below t0 (same steps, shift, guidance and eta: `--eta` sets another; the
session-18 figures in docs/default-model.md are Euler's, `--eta 0`; plain CFG: the pipeline's binding
guidance is not applied). The judge scores the result.

    t0 = 1   the pipeline's own video (pure noise: the clip plays no part), pass rate as tune_sampling.py
    t0 = 0   the autoencoder's reconstruction of the clip: the ceiling
    between  how much of a correct video the denoiser keeps when it starts from it at that noise

    python scripts/sdedit_probe.py kinema/weights/default --from 1 0.9 0.8 0.6 0.4 0 --prompts 200 --eta 0
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kinema import flow
from kinema.data.loader import from_model_range, to_model_range
from kinema.eval.judge import judge
from kinema.eval.suite import real_clips, suite_prompts, video_seed
from kinema.pipelines.pipeline import KinemaPipeline
from tune_sampling import TUNE_FIRST  # the tuning prompts start where the adherence protocol's 0-199 end


@torch.no_grad()
def from_clips(pipe, prompts, t0s: list[float], batch: int = 20, eta: float | None = None) -> dict[float, list[np.ndarray]]:
    """t0 -> the (T, H, W, 3) uint8 video of each prompt, sampled from its world clip noised to t0.
    eta None: the model's default. Stochastic steps (eta > 0) go one prompt at a time, so each
    prompt's fresh noise continues its own generator, as the pipeline draws it."""
    d = pipe.defaults
    eta = d.eta if eta is None else eta
    batch = 1 if eta > 0 else batch
    clips = real_clips(prompts, d.width, d.height, d.num_frames)
    out: dict[float, list[np.ndarray]] = {t0: [] for t0 in t0s}
    for a in range(0, len(prompts), batch):
        ps = prompts[a:a + batch]
        z0 = pipe.vae.normalize(pipe.vae.encode(torch.stack([to_model_range(c) for c in clips[a:a + batch]])).mode())
        generators = [torch.Generator().manual_seed(video_seed(p.id, 0)) for p in ps]
        noise = torch.stack([torch.randn(z0.shape[1:], generator=g) for g in generators])  # what the pipeline draws
        after_noise = generators[0].get_state()  # for the first video; with eta > 0 the batch is that one prompt
        cond = pipe.text_encoder.encode([p.text for p in ps])
        uncond = pipe.text_encoder.encode([""] * len(ps))
        tokens = math.prod(s // q for s, q in zip(z0.shape[2:], pipe.dit.cfg.patch_size))
        shift = d.shift or flow.timestep_shift_for(tokens)
        dit = lambda x, t, *c: pipe.denoiser(float(t[0]))(x, t, *c)  # noqa: E731  (a high-noise expert's steps)
        velocity = flow.guided_velocity_fn(dit, cond, uncond, d.guidance_scale)
        for t0 in t0s:
            fresh = torch.Generator()
            fresh.set_state(after_noise)  # every t0 draws the same fresh noise the pipeline would
            x = flow.euler_sample(velocity, (1 - t0) * z0 + t0 * noise, d.num_inference_steps, shift=shift, start=t0,
                                  eta=eta, generator=fresh)
            out[t0].extend(from_model_range(pipe.vae.decode(pipe.vae.denormalize(x))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="a model folder (default: the shipped model)")
    ap.add_argument("--from", dest="t0s", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.6, 0.4, 0.0],
                    help="noise levels t0 to start from (1 = pure noise, 0 = the clip itself)")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--batch", type=int, default=20, help="prompts a batch (1 with stochastic steps)")
    ap.add_argument("--eta", type=float, help="fresh noise a sampling step (default: the model's; 0 = Euler)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", help="also write the figures and each failing prompt's failed checks here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if any(not 0 <= t <= 1 for t in a.t0s):
        ap.error("--from: noise levels must lie in [0, 1]")
    pipe = KinemaPipeline.from_pretrained(a.model)
    prompts = suite_prompts("shapes-v1-trained", TUNE_FIRST + a.prompts)[TUNE_FIRST:]
    t_start = time.perf_counter()
    videos = from_clips(pipe, prompts, a.t0s, a.batch, a.eta)
    rows = []
    for t0, vs in videos.items():
        verdicts = [judge(v, p.text) for v, p in zip(vs, prompts)]
        passed = [bool(vd.passed) for vd in verdicts]
        by = {n: [ok for ok, p in zip(passed, prompts) if p.num_objects == n] for n in (1, 2)}
        rows.append({"t0": t0, "adherence": sum(passed) / len(passed),
                     **{f"{n}_object{'s' if n > 1 else ''}": f"{sum(v)}/{len(v)}" for n, v in by.items()}})
        print(json.dumps(rows[-1]), flush=True)
        rows[-1]["failed"] = {p.id: [f"{c.check}: {c.expected} -> {c.measured}" for c in vd.failed()]
                              for vd, p in zip(verdicts, prompts) if not vd.passed}
    print(f"{len(prompts)} prompts (ids {TUNE_FIRST}-{TUNE_FIRST + len(prompts) - 1} of shapes-v1-trained), "
          f"{time.perf_counter() - t_start:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
