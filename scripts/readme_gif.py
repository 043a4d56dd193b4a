"""The README's GIF: four prompts from the shipped default model, in a 2x2 grid.

    python scripts/readme_gif.py --out docs/assets/default-model.gif
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from kinema.data.video_io import write_video
from kinema.pipelines import KinemaPipeline

PROMPTS = [
    "a big red circle moving right on a gray background",
    "a small yellow square spinning and a big blue triangle moving up on navy",
    "a big green triangle growing on a black background",
    "a small white circle bouncing and a small orange square moving left on a gray background",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/assets/default-model.gif")
    ap.add_argument("--model", help="model folder (default: the shipped model)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    pipe = KinemaPipeline.from_pretrained(a.model)
    videos = [pipe(p, generator=torch.Generator().manual_seed(a.seed), output_type="uint8", progress=False).frames[0]
              for p in PROMPTS]  # each (T, H, W, 3)
    top, bottom = np.concatenate(videos[:2], axis=2), np.concatenate(videos[2:], axis=2)
    grid = np.concatenate([top, bottom], axis=1)  # (T, 2H, 2W, 3)
    write_video(a.out, grid, fps=pipe.defaults.fps)
    print("\n".join(f"{i}: {p}" for i, p in enumerate(PROMPTS)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
