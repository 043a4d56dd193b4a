"""Does the model know which of its own videos follows the prompt? Best-of-N by the DiT's own score.

For each tuning prompt (ids 200.. of `shapes-v1-trained`; the test takes 0-199) this generates N
candidate videos (seeds `video_seed(i, j)`, j < N: candidate 0 is the video the eval makes) and
scores each candidate's final latent z with the DiT itself, never the judge: at K fixed noise
levels t_k = (k + 1/2) / K and fixed noises e_k (the same for every candidate),

    L_c(z) = mean_k |v(x_k, t_k, caption) - (e_k - z)|^2,   L_u(z) = the same with the empty caption,
    x_k = (1 - t_k) z + t_k e_k  (kinema/flow.py's path)

and picks by `L_u - L_c`: how much better the caption lets the model explain the video than no
caption does (the "diffusion classifier" of Li et al. 2023; the log-likelihood ratio log p(z|c) -
log p(z) up to weighting), or by the lowest L_c, or the lowest L_u. The judge then says which
candidates pass, so the script reports the passes of candidate 0 (the default pipeline), of each
pick, of a random candidate (the mean) and of an oracle (any passes). docs/default-model.md has
the figures: no pick is much better than chance.

    python scripts/self_rerank.py kinema/weights/default --prompts 100 --candidates 4 --json runs/rerank.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from kinema import flow
from kinema.eval.judge import judge
from kinema.eval.suite import suite_prompts, video_seed
from kinema.pipelines import KinemaPipeline
from tune_sampling import TUNE_FIRST  # scripts/: the first tuning prompt (the test takes 0-199)


@torch.no_grad()
def self_scores(pipe: KinemaPipeline, z: torch.Tensor, prompt: str, levels: int = 8, seed: int = 0) -> dict:
    """L_c and L_u (per level) of latent z (1, C, T', h, w) under `prompt` (as the DiT reads it)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((levels, *z.shape[1:]), generator=g)
    t = (torch.arange(levels, dtype=torch.float32) + 0.5) / levels
    x = flow.interpolate(z.expand(levels, *z.shape[1:]), noise, t)
    target = flow.velocity_target(z.expand_as(noise), noise)
    cond, cmask = pipe.text_encoder.encode([prompt] * levels)  # (levels, max_length, D): every encode's length
    unc, umask = pipe.text_encoder.encode([""] * levels)
    v = pipe.dit(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, unc]), torch.cat([cmask, umask]))
    err = ((v - torch.cat([target, target])) ** 2).flatten(1).mean(1)  # (2 levels,)
    return {"cond": err[:levels].tolist(), "uncond": err[levels:].tolist()}


@torch.no_grad()
def candidates(pipe: KinemaPipeline, prompt, n: int) -> list[tuple[bool, torch.Tensor]]:
    """(judge passes, sampler's latent z (1, C, T', h, w)) of the n videos of a suite prompt, from
    seeds video_seed(prompt.id, j): candidate 0 is the video `kinema eval` makes with one candidate
    a prompt (`num_candidates=1`; the shipped model's verifier picks among its own since session 29)."""
    out = []
    for j in range(n):
        video = pipe(prompt.text, generator=torch.Generator().manual_seed(video_seed(prompt.id, j)),
                     output_type="uint8", progress=False, num_candidates=1)
        out.append((judge(video.frames[0], prompt.text).passed, video.latents))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--first", type=int, default=TUNE_FIRST, help="first prompt id (200: the tuning prompts)")
    ap.add_argument("--suite", default="shapes-v1-trained")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write every candidate's verdict and losses here")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="only print the table of earlier runs' JSON")
    a = ap.parse_args(argv)
    if a.summarize:
        rows = [r for path in a.summarize for r in json.load(open(path))]
        summarize(rows, a.candidates)
        return 0
    torch.set_num_threads(a.threads)
    pipe = KinemaPipeline.from_pretrained(a.model)
    prompts = suite_prompts(a.suite, a.first + a.prompts)[a.first:]
    rows, t0 = [], time.time()
    for n, p in enumerate(prompts):
        read_as = pipe.refine([p.text])[0]
        for j, (passed, z) in enumerate(candidates(pipe, p, a.candidates)):
            rows.append({"id": p.id, "objects": p.num_objects, "candidate": j, "seed": video_seed(p.id, j),
                         "pass": passed, "scores": self_scores(pipe, z, read_as, a.levels)})
        done = rows[-a.candidates:]
        print(f"[{n + 1}/{len(prompts)} {time.time() - t0:.0f}s] {p.id} {p.num_objects} obj: pass "
              + "".join("x" if r["pass"] else "." for r in done) + "  L_u - L_c "
              + " ".join(f"{PICKERS['L_u - L_c'](r):+.3f}" for r in done), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f)
    summarize(rows, a.candidates)
    return 0


PICKERS = {  # a candidate's merit, higher is picked
    "L_u - L_c": lambda r: sum(r["scores"]["uncond"]) - sum(r["scores"]["cond"]),
    "lowest L_c": lambda r: -sum(r["scores"]["cond"]),
    "lowest L_u": lambda r: -sum(r["scores"]["uncond"]),
}


def summarize(rows: list[dict], n: int) -> None:
    by = {}
    for r in rows:
        by.setdefault(r["id"], []).append(r)
    for label, keep in (("all", lambda c: True), ("1 object", lambda c: c[0]["objects"] == 1),
                        ("2 objects", lambda c: c[0]["objects"] == 2)):
        cands = [c for c in by.values() if keep(c)]
        if not cands:
            continue
        first = sum(c[0]["pass"] for c in cands)
        mean = sum(sum(r["pass"] for r in c) / len(c) for c in cands)
        oracle = sum(any(r["pass"] for r in c) for c in cands)
        picked = ", ".join(f"{name} {sum(max(c, key=f)['pass'] for c in cands)}" for name, f in PICKERS.items())
        print(f"{label:>9} ({len(cands)} prompts, {n} candidates): candidate 0 {first}, random {mean:.1f}, "
              f"oracle {oracle}; best by {picked}")


if __name__ == "__main__":
    raise SystemExit(main())
