"""Held-out flow-matching loss of one or more exported models, on the same clips, noise and times.

A cheap yardstick between adherence evals: the velocity MSE on fresh shapes-world clips (world
seeds no training pool draws: `clip_seed(--seed, i)`, with --seed away from the pools' 0),
each clip at every time of a fixed grid t = (k + 0.5) / K with one fixed noise draw, captions
as training writes them (detailed and short alternate; held-out wording excluded). Every model
sees exactly the same inputs, so differences are the models'. Models may differ in patch size
and depth (the loss is on latents, not tokens) but must share an autoencoder.

    python scripts/val_loss.py kinema/weights/default runs/default-p1/model --clips 128
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kinema import flow
from kinema.autoencoder.vae import CONFIG_NAME, CausalVideoVAE
from kinema.data.loader import to_model_range
from kinema.data.synth import clip_seed
from kinema.pipelines.pipeline import dit_folder, load_dit
from kinema.text.encoders import load_text_encoder
from kinema.world import make_clip
from kinema.world.vocab import HELD_OUT_WORDS


def validation_set(vae, encoder, clips: int, seed: int, size: tuple[int, int, int]):
    """(latents (n, C, T', H', W'), text states, mask, objects (n,)) of `clips` fresh clips."""
    frames, texts, objects = [], [], []
    for i in range(clips):
        clip = make_clip(clip_seed(seed, i), size[2], size[1], size[0], exclude_words=HELD_OUT_WORDS)
        frames.append(to_model_range(clip.frames))  # (3, T, H, W)
        texts.append(clip.text if i % 2 == 0 else clip.short_text)
        objects.append(len(clip.scene.objects))
    with torch.no_grad():
        states, mask = encoder(texts)
    return encode_frames(vae, frames), states, mask, torch.tensor(objects)


@torch.no_grad()
def encode_frames(vae, frames: list[torch.Tensor]) -> torch.Tensor:
    """(n, C, T', H', W') normalised latents of n clips (3, T, H, W) in model range, 16 at a time."""
    return torch.cat([vae.normalize(vae.encode(torch.stack(frames[a:a + 16])).mode()) for a in range(0, len(frames), 16)])


def add_common_args(ap: argparse.ArgumentParser, clips: int, seed: int) -> None:
    """The arguments val_loss.py and binding_loss.py share."""
    ap.add_argument("models", nargs="+", help="exported model folders (vae/ + dit/), or a DiT folder after the first")
    ap.add_argument("--clips", type=int, default=clips)
    ap.add_argument("--times", type=int, default=8, help="K: the grid t = (k + 0.5) / K")
    ap.add_argument("--seed", type=int, default=seed, help="validation world seed (training pools use data.seed 0)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", help="also write the figures here")


def load_shared_parts(a: argparse.Namespace):
    """Set --threads; (autoencoder, text encoder) of the first model folder, or None (after an error
    message) if another model folder has another autoencoder (the loss is on latents, so they must
    share one) or reads captions another way (another encoder, length or clause_attention)."""
    if a.threads:
        torch.set_num_threads(a.threads)
    models = a.models
    first = Path(models[0])
    vae_dir = first / "vae"
    vae_config = json.loads((vae_dir / CONFIG_NAME).read_text())
    index = json.loads((first / "model_index.json").read_text())
    text_keys = ("text_encoder", "text_max_length", "text_clause_attention")
    for m in models[1:]:
        other_vae, other_index = Path(m) / "vae" / CONFIG_NAME, Path(m) / "model_index.json"
        if other_vae.is_file() and json.loads(other_vae.read_text()) != vae_config:
            print(f"error: {m} has another autoencoder than {first}; the loss is on latents, so they must share one",
                  file=sys.stderr)
            return None
        if other_index.is_file() and any(json.loads(other_index.read_text()).get(k) != index.get(k) for k in text_keys):
            print(f"error: {m} reads captions another way than {first} ({', '.join(text_keys)}); "
                  "score them in separate runs (the same clips, noise and times)", file=sys.stderr)
            return None
    return (CausalVideoVAE.from_pretrained(vae_dir).eval(),
            load_text_encoder(index["text_encoder"], max_length=index["text_max_length"],
                              clause_attention=index.get("text_clause_attention", False)))


@torch.no_grad()
def losses(dit, z, states, mask, times: torch.Tensor, noise: torch.Tensor, batch: int) -> torch.Tensor:
    """(n, K) per-clip, per-time velocity MSE."""
    n, K = z.shape[0], len(times)
    out = torch.empty(n, K)
    for k, t in enumerate(times):
        for a in range(0, n, batch):
            x0, eps = z[a:a + batch], noise[a:a + batch]
            tt = t.expand(x0.shape[0])
            pred = dit(flow.interpolate(x0, eps, tt), tt, states[a:a + batch], mask[a:a + batch])
            target = flow.velocity_target(x0, eps)
            out[a:a + batch, k] = (pred.float() - target).pow(2).flatten(1).mean(1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, clips=128, seed=7)
    ap.add_argument("--size", type=int, nargs=3, default=(17, 64, 64), metavar=("FRAMES", "H", "W"))
    a = ap.parse_args(argv)
    parts = load_shared_parts(a)
    if parts is None:
        return 2
    vae, encoder = parts
    t0 = time.perf_counter()
    z, states, mask, objects = validation_set(vae, encoder, a.clips, a.seed, tuple(a.size))
    g = torch.Generator().manual_seed(a.seed)
    noise = torch.randn(z.shape, generator=g)
    times = (torch.arange(a.times) + 0.5) / a.times
    print(f"{a.clips} clips ({int((objects == 1).sum())} with 1 object), latents {tuple(z.shape[1:])}, "
          f"t = {[round(float(t), 3) for t in times]} ({time.perf_counter() - t0:.0f} s)")
    rows, per_clip = [], []
    for m in a.models:
        dit = load_dit(dit_folder(m)).eval()
        t0 = time.perf_counter()
        per = losses(dit, z, states, mask, times, noise, a.batch)  # (n, K)
        row = {"model": m, "patch": list(dit.cfg.patch_size), "depth": dit.cfg.depth,
               "loss": float(per.mean()), "loss_1_object": float(per[objects == 1].mean()),
               "loss_2_objects": float(per[objects == 2].mean()),
               "loss_by_t": [round(float(v), 5) for v in per.mean(0)],
               "stderr": float(per.mean(1).std() / np.sqrt(len(per))), "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        per_clip.append(per.mean(1))
        print(f"{m}: loss {row['loss']:.5f} ± {row['stderr']:.5f} (1 object {row['loss_1_object']:.5f}, "
              f"2 objects {row['loss_2_objects']:.5f}); by t {row['loss_by_t']} [{row['seconds']} s]")
    if len(rows) > 1:
        base = rows[0]
        for r, per in zip(rows[1:], per_clip[1:]):
            diff = per - per_clip[0]  # paired: the same clips, noise and times
            r["vs_first"] = {"diff": float(diff.mean()), "stderr": float(diff.std() / np.sqrt(len(diff)))}
            print(f"{r['model']} vs {base['model']}: {float(diff.mean()):+.5f} ± {r['vs_first']['stderr']:.5f} "
                  f"({100 * float(diff.mean()) / base['loss']:+.1f} %)")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
