"""Reward-ranked fine-tuning (RAFT, Dong et al. 2023; GORS in T2I-CompBench, Huang et al. 2023): the
model's own videos that the world's judge passes, as training data.

`collect` makes one video for each of N training captions (a world pool's clips, by pool index: the
captions the model trained on, no suite prompt's), judges it against its caption, and keeps the
sampler's latent of every video that passes: `OUT/latents.safetensors` ((n, C, T', h, w), fp16,
normalised as the DiT sees them) and `OUT/samples.json` (the caption and pool index of each, and
every verdict). `kinema train dit --set mix_latents=OUT` then mixes them into its batches
(`mix_share` of the samples; kinema/train/dit.py).

`failures` is the control for what the judge's choice alone brings: the world's own clips (their
latents from the config's latent cache, which `kinema train latents` fills) of the captions whose
video failed, written the same way, so a run can train harder on real data of what it fails.

The judge is the reward here, and also what `kinema eval` scores with: the test prompts are other
world seeds than any pool's, but a gain measured by the same judge is the figure to doubt first
(docs/default-model.md reports it with that caveat). Real video data has no exact judge; there a
learned reward would take its place.

    python scripts/raft.py collect kinema/weights/default --config configs/default-refiner.toml \\
        --clips 3000 --two-object-share 0.67 --out runs/raft/samples
    python scripts/raft.py failures runs/raft/samples --config configs/default-raft.toml --out runs/raft/failed
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
            _, texts = _world_work((seed, cfg.data.buckets[0], cfg.data.fps, tuple(data.excluded_words), False, None))  # captions only
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
                     output_type="uint8", progress=False, num_candidates=1)
        for r, frames, z in zip(part, video.frames, video.latents):
            r["passed"] = judge(frames, r["text"]).passed
            if r["passed"]:
                kept.append(z.to(torch.float16))
    return rows, torch.stack(kept) if kept else torch.empty(0)


def failed_clips(samples: str, config: str) -> tuple[list[str], torch.Tensor]:
    """The captions whose video failed in a `collect` folder, and their world clips' latents (n, C,
    T', h, w) from the config's latent cache (normalised, as training reads them)."""
    from kinema.autoencoder import CausalVideoVAE
    from kinema.train.latent_cache import LatentCache

    cfg = load_dit_train_config(config)
    if not cfg.latent_cache_dir:
        raise SystemExit(f"{config} has no latent_cache_dir: `kinema train latents` fills one")
    cache = LatentCache(CausalVideoVAE.from_pretrained(cfg.vae), cfg.latent_cache_dir)
    rows = [r for r in json.loads((Path(samples) / "samples.json").read_text())["rows"] if not r["passed"]]
    data = VideoBatches(cfg.data, cfg.batch_size)
    keys = [data.pool_key(r["index"]) for r in rows]  # with data.spin_degrees' suffix where it applies
    missing = sum(k not in cache for k in keys)
    if missing:
        raise SystemExit(f"{missing} of {len(keys)} failed clips are not in {cfg.latent_cache_dir}: run "
                         f"`kinema train latents --config {config}` first")
    return [r["text"] for r in rows], torch.stack([cache[k].to(torch.float16) for k in keys])


def write_folder(out: str | Path, captions: list[str], latents: torch.Tensor, info: dict) -> Path:
    """A `mix_latents` folder: latents.safetensors and samples.json (its captions, and `info`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.contiguous()}, str(out / "latents.safetensors"))
    (out / "samples.json").write_text(json.dumps({**info, "captions": captions}, indent=1))
    return out


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
    f = sub.add_parser("failures", help="the world clips of the captions whose video failed, as a mix folder")
    f.add_argument("samples", help="a collect folder")
    f.add_argument("--config", default="configs/default-raft.toml", help="training config with the latent cache")
    f.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "failures":
        captions, latents = failed_clips(a.samples, a.config)
        write_folder(a.out, captions, latents, {"failures_of": a.samples, "config": a.config})
        print(json.dumps({"clips": len(captions), "out": a.out}))
        return 0
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    pipe = KinemaPipeline.from_pretrained(a.model)
    rows, latents = collect(pipe, pool_captions(a.config, a.clips, a.two_object_share, a.first), a.batch, a.seed)
    info = {"model": str(a.model or "default"), "config": a.config, "seed": a.seed, "summary": summary(rows),
            "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    write_folder(a.out, [r["text"] for r in rows if r["passed"]], latents, info)
    print(json.dumps(info["summary"] | {"seconds": info["seconds"], "out": a.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
