"""How long a user waits for the default video: `kinema generate` wall time, model load included.

Runs the command line as a user would (a fresh process each time: imports, model load, text
encode, denoise, decode, MP4 write), N times, and prints each time and the median. Each model
generates at its own default size, steps and guidance. With several `--model`s the runs are
interleaved (round r runs every model once, in turn), so machine noise falls on all of them
alike, and each median is also given as a ratio to the first model's.

    python benchmarks/generate_speed.py                 # the shipped model, its default settings
    python benchmarks/generate_speed.py --model runs/default/model --runs 5
    python benchmarks/generate_speed.py --model kinema/weights/default --model runs/default-128-export
    python benchmarks/generate_speed.py --prompt "a tiny red disc drifting right over a grey backdrop" --refine both

`--refine both` times every model with prompt refinement (its default) and with `--no-refine`,
interleaved: what rewriting the prompt's untrained words costs (kinema/text/refine.py).
`--candidates 1 4` times each model at each number of candidates (best-of-K by the model's
verifier, kinema/models/verifier.py; default: the model's own), interleaved likewise.
`--malloc both` times each with the `kinema` command's malloc tuning (kinema/malloc.py, its
default) and without it (KINEMA_MALLOC=default), interleaved.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHIPPED = "shipped default"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append",
                    help="model folder (default: the shipped model); repeat to time several side by side")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt", default="a big red circle moving right on a gray background")
    ap.add_argument("--refine", choices=["on", "off", "both"], default="on",
                    help="prompt refinement: the model's default (on), --no-refine (off), or both interleaved")
    ap.add_argument("--candidates", type=int, nargs="+", default=[None],
                    help="videos sampled a prompt (`kinema generate --candidates`); several: each, interleaved")
    ap.add_argument("--malloc", choices=["on", "off", "both"], default="on",
                    help="the command's malloc tuning (on, its default), KINEMA_MALLOC=default (off), or both interleaved")
    args = ap.parse_args()
    refine = {"on": [True], "off": [False], "both": [True, False]}[args.refine]
    malloc = {"on": [True], "off": [False], "both": [True, False]}[args.malloc]
    runs = [(model, r, k, a) for model in (args.model or [None]) for r in refine for k in args.candidates
            for a in malloc]
    times: list[list[float]] = [[] for _ in runs]  # seconds, per (model, refinement, candidates, malloc tuning)
    name = lambda model, r, k, a: ((model or SHIPPED) + ("" if r else ", --no-refine")  # noqa: E731
                                   + ("" if k is None else f", --candidates {k}")
                                   + ("" if a else ", KINEMA_MALLOC=default"))
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for m, (model, r, k, a) in enumerate(runs):
                cmd = [sys.executable, "-m", "kinema", "generate", args.prompt, "--out",
                       str(Path(tmp) / f"{m}_{i}.mp4"), "--seed", str(i), "--quiet"] + (["--model", model] if model else [])
                cmd += ([] if r else ["--no-refine"]) + ([] if k is None else ["--candidates", str(k)])
                t0 = time.perf_counter()
                env = dict(os.environ, **({} if a else {"KINEMA_MALLOC": "default"}))
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
                times[m].append(time.perf_counter() - t0)
                print(f"run {i + 1}, {name(model, r, k, a)}: {times[m][-1]:.2f} s", flush=True)
    first = statistics.median(times[0])
    for m, (model, r, k, a) in enumerate(runs):
        median = statistics.median(times[m])
        print(json.dumps({"model": name(model, r, k, a), "runs": times[m], "median_s": median,
                          "vs_first": round(median / first, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
