"""How long a user waits for the default video: `kinema generate` wall time, model load included.

Runs the command line as a user would (a fresh process each time: imports, model load, text
encode, denoise, decode, MP4 write), N times, and prints each time and the median.

    python benchmarks/generate_speed.py                 # the shipped model, its default settings
    python benchmarks/generate_speed.py --model runs/default/model --runs 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: the shipped model)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt", default="a big red circle moving right on a gray background")
    args = ap.parse_args()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            cmd = [sys.executable, "-m", "kinema", "generate", args.prompt, "--out", str(Path(tmp) / f"{i}.mp4"),
                   "--seed", str(i), "--quiet"] + (["--model", args.model] if args.model else [])
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
            print(f"run {i + 1}: {times[-1]:.2f} s", flush=True)
    print(json.dumps({"runs": times, "median_s": statistics.median(times), "model": args.model or "shipped default"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
