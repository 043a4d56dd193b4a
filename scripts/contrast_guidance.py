"""Binding guidance on two-object prompts: the pass count for each weight h, video for video.

The pipeline's `binding_guidance` h (kinema/pipelines/pipeline.py) adds h (v(prompt) - v(swapped))
to classifier-free guidance, the swapped caption being the prompt with its two objects' noun
phrases exchanged (kinema.world.parse.swap_objects): the same words, each motion on the other
object. One-object prompts have nothing to swap and are left out of this sweep. Every weight uses
the suite's seeds (as `kinema eval`), so rows compare video for video; gained/lost are against the
first weight. Prompts come from the tuning ids (200 and up), never the test's.

    python scripts/contrast_guidance.py kinema/weights/default --weights 0 1 2 --prompts 200 --threads 2
    python scripts/contrast_guidance.py kinema/weights/default --weights 0 1 --first 400 --prompts 200
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from kinema.eval.suite import run_suite, suite_prompts
from kinema.pipelines import KinemaPipeline
from tune_sampling import TUNE_FIRST  # prompts below are the test protocol's


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 2.0], help="h, binding guidance's weight")
    ap.add_argument("--prompts", type=int, default=200, help="prompt ids --first .. --first + N (the two-object ones run)")
    ap.add_argument("--first", type=int, default=TUNE_FIRST)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.first < TUNE_FIRST:
        ap.error(f"--first {a.first}: prompts 0-{TUNE_FIRST - 1} are the test's")
    pipe = KinemaPipeline.from_pretrained(a.model)
    prompts = [p for p in suite_prompts("shapes-v1-trained", a.first + a.prompts)[a.first:] if p.num_objects == 2]
    rows, passed = [], {}
    for h in a.weights:
        pipe.defaults.binding_guidance = h
        t0 = time.perf_counter()
        run = run_suite(pipe, prompts, videos_per_prompt=1, progress=False)
        passed[h] = {r.prompt.id for r in run.results if r.verdict.passed}
        s = run.summary()
        rows.append({"weight": h, "two_object_passed": len(passed[h]), "of": len(prompts),
                     **{k: round(v["rate"], 3) for k, v in s["by_attribute"].items()},
                     "gained_vs_first": len(passed[h] - passed[a.weights[0]]),
                     "lost_vs_first": len(passed[a.weights[0]] - passed[h]),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"model": a.model, "prompts": [a.first, a.first + a.prompts], "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
