"""The overfit check of the model stack: does a DiT trained on 8 fixed clips reproduce them?

For each of the 8 clips the run trained on (configs/overfit-8.toml), generate from its caption
with the exported model, judge the video against the caption, and measure PSNR against the
original clip.

    kinema train dit --config configs/overfit-8.toml
    python benchmarks/overfit.py --run runs/overfit-8
    python benchmarks/overfit.py --run runs/overfit-8 --vae runs/vae-f8t4-edges   # a later decoder fine-tune
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from kinema.data.loader import VideoBatches
from kinema.eval.judge import judge
from kinema.eval.metrics import psnr
from kinema.pipelines import KinemaPipeline
from kinema.pipelines.pipeline import export_model
from kinema.config import from_dict
from kinema.train.config import DiTTrainConfig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/overfit-8")
    ap.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ap.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    ap.add_argument("--vae", help="decode with this fine-tune of the run's autoencoder (same encoder, checked)")
    a = ap.parse_args()
    run = Path(a.run)
    cfg = from_dict(DiTTrainConfig, json.loads((run / "config.json").read_text()))
    n = cfg.data.num_clips
    data = VideoBatches(cfg.data, n)
    bucket = data.cfg.buckets[0]
    if a.vae:  # the DiT is unchanged (same latent space); only the decoder differs
        with tempfile.TemporaryDirectory() as tmp:
            pipe = KinemaPipeline.from_pretrained(export_model(run / "model", Path(tmp) / "model", a.vae))
    else:
        pipe = KinemaPipeline.from_pretrained(run / "model")
    rows = []
    for i in range(n):
        video, caption, _ = data.sample(i, 0)  # global samples 0..n-1 are epoch 0: each clip once
        original = ((video.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        out = pipe(caption, num_frames=bucket[0], height=bucket[1], width=bucket[2], num_inference_steps=a.steps,
                   guidance_scale=a.guidance, generator=torch.Generator().manual_seed(i), output_type="uint8",
                   progress=False).frames[0]
        v = judge(out, caption)
        rows.append({"clip": i, "caption": caption, "judge_pass": v.passed, "psnr_db": round(float(psnr(out, original)), 2),
                     "failed": [f"{c.check}: expected {c.expected}, measured {c.measured}" for c in v.failed()]})
        print(json.dumps(rows[-1]), file=sys.stderr)
    summary = {"clips": n, "judge_pass": sum(r["judge_pass"] for r in rows),
               "psnr_db_mean": round(float(np.mean([r["psnr_db"] for r in rows])), 2),
               "psnr_db_min": min(r["psnr_db"] for r in rows), "rows": rows}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
