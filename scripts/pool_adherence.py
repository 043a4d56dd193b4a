"""Adherence of a model on captions of its own training pool: the memorisation check.

If a model passes far more prompts from the clips it trained on than from fresh seeds
(`kinema eval --suite shapes-v1-trained`), it is memorising its pool and more data is the lever;
if the two rates are alike, it is not, and capacity or training steps are. Prompts follow
shapes-v1's pattern (blocks of detailed/short x 1/2 objects), taken from the pool's clips in order
(`kinema.data.synth.clip_seed(pool_seed, i)`, the trainer's world pool), skipping clips whose
object count does not fit, with the held-out wording excluded as in training.

    python scripts/pool_adherence.py kinema/weights/default --prompts 100 --threads 1
"""
from __future__ import annotations

import argparse
import json

import torch

from kinema.data.synth import clip_seed
from kinema.eval.suite import SUITE_SIZE, SuitePrompt, run_suite
from kinema.pipelines import KinemaPipeline
from kinema.world import make_clip
from kinema.world.vocab import HELD_OUT_WORDS


def pool_prompts(n: int, pool_seed: int = 0, pool_size: int = 8000) -> list[SuitePrompt]:
    """n prompts from the first clips of a world pool (data.seed, data.num_clips of the recipe)."""
    prompts, i = [], 0
    while len(prompts) < n:
        if i >= pool_size:
            raise ValueError(f"the pool's {pool_size} clips give only {len(prompts)} of the {n} prompts")
        seed, k = clip_seed(pool_seed, i), len(prompts)
        i += 1
        objects = 1 + (k // 2) % 2
        clip = make_clip(seed, *SUITE_SIZE, exclude_words=HELD_OUT_WORDS)
        if len(clip.scene.objects) != objects:
            continue
        kind = "detailed" if k % 2 == 0 else "short"
        prompts.append(SuitePrompt(k, clip.text if kind == "detailed" else clip.short_text, kind, objects, seed))
    return prompts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="model folder (default: the shipped model)")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--pool-seed", type=int, default=0, help="the recipe's data.seed (default 0)")
    ap.add_argument("--pool-size", type=int, default=8000, help="the recipe's data.num_clips (default 8000)")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = KinemaPipeline.from_pretrained(args.model) if args.model else KinemaPipeline.from_pretrained()
    s = run_suite(pipe, pool_prompts(args.prompts, args.pool_seed, args.pool_size), videos_per_prompt=1).summary()
    print(json.dumps({"rate": s["rate"], "1 object": s["by_objects"]["1"]["rate"],
                      "2 objects": s["by_objects"]["2"]["rate"],
                      "by_attribute": {a: round(v["rate"], 3) for a, v in s["by_attribute"].items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
