"""Reward-ranked fine-tuning (RAFT, Dong et al. 2023; GORS in T2I-CompBench, Huang et al. 2023): the
model's own videos that the world's judge passes, as training data.

`collect` makes one video for each of N training captions (a world pool's clips, by pool index: the
captions the model trained on, no suite prompt's), judges it against its caption, and keeps the
sampler's latent of every video that passes: `OUT/latents.safetensors` ((n, C, T', h, w), fp16,
normalised as the DiT sees them) and `OUT/samples.json` (the caption and pool index of each, and
every verdict). `kinema train dit --set mix_latents=OUT` then mixes them into its batches
(`mix_share` of the samples; kinema/train/dit.py).

The judge is the reward here, and also what `kinema eval` scores with: the test prompts are other
world seeds than any pool's, but a gain measured by the same judge is the figure to doubt first
(docs/default-model.md reports it with that caveat). Real video data has no exact judge; there a
learned reward would take its place.

    python scripts/raft.py collect kinema/weights/default --config configs/default-refiner.toml \\
        --clips 3000 --two-object-share 0.67 --out runs/raft/samples
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from kinema.data.loader import VideoBatches, _rng, _world_work
from kinema.data.synth import clip_seed
from kinema.eval.judge import judge
from kinema.pipelines import KinemaPipeline
from kinema.train.config import load_dit_train_config
from kinema.world.scene import num_objects_of


def pool_captions(config: str, clips: int, two_object_share: float, first: int = 0) -> list[dict]:
    """`clips` captions of the config's world pool from pool index `first` on, a two_object_share of
    them of two-object clips (as far as the pool has them), each of the kind (detailed or short) the
    pool index draws: [{"index", "objects", "text"}]."""
    cfg = load_dit_train_config(config)
    data = VideoBatches(cfg.data, cfg.batch_size)
    n = cfg.data.num_clips or 10 ** 9
    want = {2: round(clips * two_object_share), 1: clips - round(clips * two_object_share)}
    rows, i = [], first
    while sum(want.values()) and i < n:
        seed = clip_seed(cfg.data.seed, i)
        k = num_objects_of(seed)
        if want[k]:
            _, texts = _world_work((seed, cfg.data.buckets[0], cfg.data.fps, tuple(data.excluded_words), False))
            kind = {"both": _rng(cfg.data.seed, "raft", i).randrange(2), "text": 0, "short_text": 1}[cfg.data.caption]
            rows.append({"index": i, "objects": k, "text": texts[kind]})
            want[k] -= 1
        i += 1
    return rows


@torch.no_grad()
def collect(pipe: KinemaPipeline, rows: list[dict], batch: int, seed: int) -> tuple[list[dict], torch.Tensor]:
    """One video a caption (generator seeded by seed and the batch's first pool index), judged:
    (every row with its verdict, the passing videos' latents (n, C, T', h, w) in row order)."""
    kept = []
    for s in tqdm(range(0, len(rows), batch), desc="collect", unit="batch"):
        part = rows[s:s + batch]
        video = pipe([r["text"] for r in part], generator=torch.Generator().manual_seed(seed * 10 ** 9 + part[0]["index"]),
                     output_type="uint8", progress=False)
        for r, frames, z in zip(part, video.frames, video.latents):
            r["passed"] = judge(frames, r["text"]).passed
            if r["passed"]:
                kept.append(z.to(torch.float16))
    return rows, torch.stack(kept) if kept else torch.empty(0)


def summary(rows: list[dict]) -> dict:
    out = {"videos": len(rows), "passed": sum(r["passed"] for r in rows)}
    for k in (1, 2):
        sub = [r for r in rows if r["objects"] == k]
        out[f"{k}_object"] = f"{sum(r['passed'] for r in sub)} / {len(sub)}"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="generate, judge and keep the passing videos' latents")
    c.add_argument("model", nargs="?", default=None, help="model folder (default: the shipped model)")
    c.add_argument("--config", default="configs/default-refiner.toml", help="training config whose world pool gives the captions")
    c.add_argument("--clips", type=int, default=3000)
    c.add_argument("--first", type=int, default=0, help="first pool index")
    c.add_argument("--two-object-share", type=float, default=0.67)
    c.add_argument("--batch", type=int, default=8)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    pipe = KinemaPipeline.from_pretrained(a.model)
    rows, latents = collect(pipe, pool_captions(a.config, a.clips, a.two_object_share, a.first), a.batch, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    kept = [r for r in rows if r["passed"]]
    save_file({"latents": latents.contiguous()}, str(out / "latents.safetensors"))
    info = {"model": str(a.model or "default"), "config": a.config, "seed": a.seed, "summary": summary(rows),
            "seconds": round(time.perf_counter() - t0, 1), "captions": [r["text"] for r in kept], "rows": rows}
    (out / "samples.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info["summary"] | {"seconds": info["seconds"], "out": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
