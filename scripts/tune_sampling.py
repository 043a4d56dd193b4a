"""Pick a model's default guidance scale, sampling steps and time shift on prompts the test never uses.

    python scripts/tune_sampling.py MODEL_DIR --guidance 2 3 4 6 --steps 30 --shift 1 2 [--prompts 60]

Prompts 200.. of the shapes-v1-trained suite (the adherence protocol takes prompts 0-199 of it,
docs/default-model.md), one video each, judged; every setting sees the same prompts and seeds.
Prints adherence and per-attribute rates per setting; the best one goes into the model with
`kinema export MODEL_DIR --out DIR --guidance G --steps S --shift A`.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from kinema.eval.suite import run_suite, suite_prompts
from kinema.pipelines import KinemaPipeline

TUNE_FIRST = 200  # the adherence protocol uses prompts 0..199


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--suite", default="shapes-v1-trained")
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--guidance", type=float, nargs="+", default=[4.0])
    ap.add_argument("--steps", type=int, nargs="+", default=[30])
    ap.add_argument("--shift", type=float, nargs="+", default=[1.0])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write the table here too")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = KinemaPipeline.from_pretrained(a.model)
    prompts = suite_prompts(a.suite, TUNE_FIRST + a.prompts)[TUNE_FIRST:]
    rows = []
    for g, s, sh in itertools.product(a.guidance, a.steps, a.shift):
        pipe.defaults.shift = sh
        t0 = time.perf_counter()
        run = run_suite(pipe, prompts, videos_per_prompt=1, num_inference_steps=s, guidance_scale=g, progress=False)
        summary = run.summary()
        by = {k: round(v["rate"], 3) for k, v in summary["by_attribute"].items()}
        objects = {f"{k}_object{'s' * (k == '2')}": round(v["rate"], 3) for k, v in summary["by_objects"].items() if v["videos"]}
        motion2 = [c for r in run.results if r.prompt.num_objects == 2 for c in r.verdict.checks if c.attribute == "motion"]
        rows.append({"guidance": g, "steps": s, "shift": sh, "adherence": round(summary["rate"], 3), **by, **objects,
                     "two_object_motion_unclear": f"{sum(c.measured == 'unclear' for c in motion2)}/{len(motion2)}",
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: r["adherence"])
    print(f"best on prompts {TUNE_FIRST}-{TUNE_FIRST + a.prompts - 1} of {a.suite}: {json.dumps(best)}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"suite": a.suite, "prompts": [TUNE_FIRST, TUNE_FIRST + a.prompts], "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
