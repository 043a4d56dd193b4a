"""Pick a model's default guidance scale, sampling steps and time shift on prompts the test never uses.

    python scripts/tune_sampling.py MODEL_DIR --guidance 2 3 4 6 --steps 30 --shift 1 2 --eta 0 0.5 1 [--prompts 60]

Prompts 200.. of the shapes-v1-trained suite (the adherence protocol takes prompts 0-199 of it,
docs/default-model.md), one video each, judged; every setting sees the same prompts and seeds.
Prints adherence and per-attribute rates per setting; the best one goes into the model with
`kinema export MODEL_DIR --out DIR --guidance G --steps S --shift A --eta E`.

Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"):
`--guide-model DIT_DIR --autoguidance W ...` adds W - 1 times (v_model(c) - v_guide(c)) to the
classifier-free-guided velocity, the guide being a weaker model on the same latents and text
encoder (an earlier Kinema default, say); `--guidance 1 --autoguidance W` is autoguidance alone.
`--guide-skip-blocks K ...` makes the guide the model itself with blocks K skipped (spatiotemporal
skip guidance, Hyung et al. 2024, STG-R: a training-free "bad version" aimed at temporal coherence).

Reader guidance and steering (docs/training.md): `--reader-guidance S ... --reader-range LO:HI ...
[--reader-mode clean|through] [--guide NOISY_READER]`; `--candidates K --guide NOISY_READER --steer
T1,T2:LAMBDA ...`. `--objects 2` keeps the two-object prompts only.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import time

import torch

from kinema.eval.suite import run_suite, suite_prompts
from kinema.models.reader import load_reader
from kinema.pipelines import KinemaPipeline
from kinema.pipelines.pipeline import dit_folder, load_dit

TUNE_FIRST = 200  # the adherence protocol uses prompts 0..199


class Autoguided(torch.nn.Module):
    """Stands in for the pipeline's DiT. The pipeline calls it on [x; x] with [cond; uncond] and
    combines the halves by classifier-free guidance at scale `PASS_THROUGH`; it returns the final
    velocity in both halves, which that combination leaves as it is."""

    PASS_THROUGH = 2.0  # cfg_combine(v, v, s) = v for any s != 1 (1 would skip the uncond half)

    def __init__(self, model, guide, guidance: float, autoguidance: float, interval: tuple[float, ...] = (0.0, 1.0)):
        super().__init__()
        self.model, self.guide, self.cfg = model, guide, model.cfg
        self.guidance, self.autoguidance, self.interval = guidance, autoguidance, interval

    def encode_text(self, text, mask, keys_values=False):
        """The pipeline makes its caption context once with this; here it is the caption as given,
        which the model and its guide (another DiT, or the model with blocks skipped) each read."""
        return text, mask

    def forward(self, x, t, text=None, mask=None, context=None):
        if context is not None:
            text, mask = context
        B = x.shape[0] // 2
        # `guidance` at noise levels t in [lo, hi] (Kynkaanniemi et al. 2024), `outside` elsewhere
        lo, hi, outside = (*self.interval, 1.0)[:3]
        inside = lo <= float(t[0]) <= hi
        scale = self.guidance if inside else outside
        if scale == 1.0:
            v_cond = self.model(x[:B], t[:B], text[:B], mask[:B])
            v = v_cond
        else:
            v_cond, v_uncond = self.model(x, t, text, mask).chunk(2)
            v = v_cond + (scale - 1.0) * (v_cond - v_uncond)
        if self.autoguidance != 1.0 and inside:
            v = v + (self.autoguidance - 1.0) * (v_cond - self.guide(x[:B], t[:B], text[:B], mask[:B]))
        return torch.cat([v, v])


def skip_blocks(model: torch.nn.Module, skip: set[int]) -> torch.nn.Module:
    """The same DiT (shared weights) with the blocks numbered in `skip` left out: each skipped
    block becomes the identity on its residual stream (STG-R)."""
    bad = sorted(set(skip) - set(range(len(model.blocks))))
    if bad:
        raise ValueError(f"no block {bad} in a {len(model.blocks)}-block DiT")
    guide = copy.copy(model)
    guide._modules = dict(model._modules)  # a shallow copy would share (and overwrite) the block list
    guide.blocks = torch.nn.ModuleList(b for i, b in enumerate(model.blocks) if i not in skip)
    return guide


def _boundary(value: str) -> float | str | None:
    """--expert-boundary: a noise level, 'off' (None: the base DiT at every step) or 'model'."""
    if value in ("off", "model"):
        return None if value == "off" else value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a noise level in [0, 1] or 'off', got {value!r}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--suite", default="shapes-v1-trained")
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--first", type=int, default=TUNE_FIRST,
                    help=f"first prompt id (>= {TUNE_FIRST}: the test protocol uses the ones below)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[4.0])
    ap.add_argument("--steps", type=int, nargs="+", default=[30])
    ap.add_argument("--shift", type=float, nargs="+", default=[1.0])
    ap.add_argument("--eta", type=float, nargs="+", default=[None],
                    help="fresh noise a sampling step (flow.sampler_step): 0 = Euler, 1 = ancestral (default: the model's)")
    ap.add_argument("--binding-guidance", type=float, nargs="+", default=[None],
                    help="h of the pipeline's binding guidance (default: the model's); plain CFG rows only")
    ap.add_argument("--expert-boundary", type=_boundary, nargs="+", default=["model"], metavar="T|off",
                    help="noise level from which a model's high-noise expert runs, or 'off' (default: the model's)")
    ap.add_argument("--guide-model", help="a weaker DiT (folder) for --autoguidance")
    ap.add_argument("--guide-skip-blocks", type=int, nargs="+",
                    help="the guide is the model with these blocks skipped (STG-R), for --autoguidance")
    ap.add_argument("--autoguidance", type=float, nargs="+", default=[1.0])
    ap.add_argument("--guidance-interval", nargs="+", default=["0:1"], metavar="LO:HI[:G]",
                    help="--guidance only at noise levels t in [LO, HI] (t = 1 is pure noise), G elsewhere "
                         "(default 1: none); several to compare")
    ap.add_argument("--reader-guidance", type=float, nargs="+", default=[None],
                    help="scale of guidance by the verifier's scene reader (pipeline reader_guidance; default: the model's)")
    ap.add_argument("--reader-range", nargs="+", default=[None], metavar="LO:HI",
                    help="the noise levels reader guidance acts at (default: the model's)")
    ap.add_argument("--reader-mode", choices=["clean", "through"], help="how the verifier's (clean) reader guides "
                    "(pipeline reader_guidance_mode; default: the model's)")
    ap.add_argument("--guide", help="a noisy scene reader folder (train_verifier.py reader --noisy) for --reader-guidance")
    ap.add_argument("--steer", nargs="+", default=[None], metavar="T1,T2,...:LAMBDA",
                    help="resample the K candidates at these noise levels by the --guide reader, weights exp(LAMBDA log p)")
    ap.add_argument("--candidates", type=int, default=None, help="best of K by the verifier (default: the model's)")
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 2], help="only prompts of these object counts")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write the table here too")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = KinemaPipeline.from_pretrained(a.model)
    model = pipe.dit
    model_boundary = pipe.expert_boundary
    if a.expert_boundary != ["model"] and pipe.dit_high is None:
        ap.error("--expert-boundary: the model has no high-noise expert")
    if a.guide_model and a.guide_skip_blocks:
        ap.error("--guide-model and --guide-skip-blocks are two guides; give one")
    guide = load_dit(dit_folder(a.guide_model)).eval() if a.guide_model else None
    if a.guide_skip_blocks:
        guide = skip_blocks(model, set(a.guide_skip_blocks))
    if guide is None and a.autoguidance != [1.0]:
        ap.error("--autoguidance needs --guide-model or --guide-skip-blocks")
    if a.first < TUNE_FIRST:
        ap.error(f"--first {a.first}: prompts 0-{TUNE_FIRST - 1} are the test's; tune on {TUNE_FIRST} and up")
    wrapped = a.autoguidance != [1.0] or a.guidance_interval != ["0:1"]
    if wrapped and pipe.dit_high is not None and (a.expert_boundary != [None]):
        ap.error("autoguidance and guidance intervals wrap the base DiT only: add --expert-boundary off")
    prompts = [p for p in suite_prompts(a.suite, a.first + a.prompts)[a.first:] if p.num_objects in a.objects]
    if a.guide:
        pipe.guide = load_reader(a.guide)
    if a.reader_mode:
        pipe.defaults.reader_guidance_mode = a.reader_mode
    if a.candidates is not None:
        if a.candidates > 1 and pipe.verifier is None:
            ap.error(f"--candidates {a.candidates}: the model has no verifier to choose among them")
        pipe.defaults.num_candidates = a.candidates
    own = dataclasses.replace(pipe.defaults)  # the model's own settings, for the rows that keep them
    reader_ranges = [own.reader_guidance_range if rr is None else tuple(float(v) for v in rr.split(":"))
                     for rr in a.reader_range]
    steers = [(own.steer_times, own.steer_strength) if st is None else
              (tuple(float(v) for v in st.split(":")[0].split(",")), float(st.split(":")[1])) for st in a.steer]
    rows = []
    intervals = [tuple(float(v) for v in iv.split(":")) for iv in a.guidance_interval]
    for g, s, sh, ag, iv, eta, bg, eb, rg, rr, st in itertools.product(
            a.guidance, a.steps, a.shift, a.autoguidance, intervals, a.eta, a.binding_guidance, a.expert_boundary,
            a.reader_guidance, reader_ranges, steers):
        d = pipe.defaults
        d.shift = sh
        d.reader_guidance, d.reader_guidance_range = own.reader_guidance if rg is None else rg, rr
        d.steer_times, d.steer_strength = st
        pipe.expert_boundary = model_boundary if eb == "model" else eb
        plain = ag == 1.0 and iv == (0.0, 1.0)
        # the wrappers below read the pipeline's [caption; empty] halves: no binding guidance's third pass
        d.binding_guidance = (own.binding_guidance if bg is None else bg) if plain else 0.0
        pipe.dit, scale = (model, g) if plain else (Autoguided(model, guide, g, ag, iv), Autoguided.PASS_THROUGH)
        t0 = time.perf_counter()
        run = run_suite(pipe, prompts, videos_per_prompt=1, num_inference_steps=s, guidance_scale=scale, progress=False,
                        eta=eta)  # None: the model's own
        summary = run.summary()
        by = {k: round(v["rate"], 3) for k, v in summary["by_attribute"].items()}
        objects = {f"{k}_object{'s' * (k == '2')}": round(v["rate"], 3) for k, v in summary["by_objects"].items() if v["videos"]}
        motion2 = [c for r in run.results if r.prompt.num_objects == 2 for c in r.verdict.checks if c.attribute == "motion"]
        rows.append({"guidance": g, "steps": s, "shift": sh, "eta": run.settings["eta"],
                     "binding_guidance": run.settings["binding_guidance"], **({"autoguidance": ag} if guide else {}),
                     **({"expert_boundary": pipe.expert_boundary} if pipe.dit_high is not None else {}),
                     **({"interval": list(iv)} if iv != (0.0, 1.0) else {}),
                     **({"reader_guidance": d.reader_guidance, "reader_range": list(rr)} if d.reader_guidance else {}),
                     **({"steer_times": list(d.steer_times), "steer_strength": d.steer_strength} if d.steer_times else {}),
                     "candidates": pipe.default_candidates, "adherence": round(summary["rate"], 3), **by, **objects,
                     "two_object_motion_unclear": f"{sum(c.measured == 'unclear' for c in motion2)}/{len(motion2)}",
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: r["adherence"])
    print(f"best on prompts {a.first}-{a.first + a.prompts - 1} of {a.suite}: {json.dumps(best)}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"suite": a.suite, "prompts": [a.first, a.first + a.prompts], "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
