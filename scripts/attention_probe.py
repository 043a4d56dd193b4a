"""Where does each object's caption read? Cross-attention shares on fresh two-object world clips.

For every word of an object's description (size, colour, shape, motion, speed; the world's parser
says which), the share of that word's cross-attention (mean over heads and blocks) that comes from
video tokens inside the object's region (kinema/train/grounding.py: the cells it covers in each
latent frame) — `own` — and from tokens inside the other object's region but not its own (the two
share a cell when they are close) — `other`. `chance` is the mean share of tokens a region covers:
what a word read evenly everywhere would score inside its own object. A model
that binds reads an object's words at that object (own high, other near 0).

    python scripts/attention_probe.py kinema/weights/default runs/grounded-01/model --clips 48
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from kinema.data.loader import to_model_range
from kinema.data.synth import clip_seed
from kinema.pipelines.pipeline import dit_folder, load_dit
from kinema.train.grounding import AttentionMaps, object_token_masks, scene_regions, word_shares
from kinema.world import make_clip
from kinema.world.vocab import HELD_OUT_WORDS
from val_loss import add_common_args, encode_frames, load_shared_parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, clips=48, seed=12)
    ap.add_argument("--at", type=float, nargs="+", default=[0.2, 0.5, 0.8], help="noise levels t to probe")
    a = ap.parse_args(argv)
    parts = load_shared_parts(a)
    if parts is None:
        return 2
    vae, encoder = parts
    clips = [make_clip(clip_seed(a.seed, i), 64, 64, 17, num_objects=2, exclude_words=HELD_OUT_WORDS)
             for i in range(a.clips)]
    texts = [(c.text, c.short_text)[i % 2] for i, c in enumerate(clips)]  # both kinds, as training draws them
    z = encode_frames(vae, [to_model_range(c.frames) for c in clips])  # (n, C, T', H', W')
    with torch.no_grad():
        states, mask = encoder(texts)
    words = object_token_masks(encoder.tokenizer, texts, states.shape[1])  # (n, 2, L)
    rows = []
    for m in a.models:
        dit = load_dit(dit_folder(m)).eval()
        grid = tuple(s // p for s, p in zip(z.shape[2:], dit.cfg.patch_size))
        regions = torch.stack([scene_regions(c.scene, grid, vae.temporal_stride) for c in clips])  # (n, 2, N)
        row = {"model": m, "chance": float(regions.mean()),
               "chance_other": float((regions.flip(1) * (1 - regions)).mean())}
        for t in a.at:
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(a.seed))
            xt = (1 - t) * z + t * noise
            own, other = [], []
            for s in range(0, len(clips), a.batch):
                sl = slice(s, s + a.batch)
                with torch.no_grad(), AttentionMaps(dit) as maps:
                    dit(xt[sl], torch.full((xt[sl].shape[0],), t), states[sl], mask[sl])
                own.append(word_shares(maps.list, regions[sl])[words[sl]])
                only_other = regions[sl].flip(1) * (1 - regions[sl])  # the other object's cells, not shared
                other.append(word_shares(maps.list, only_other)[words[sl]])
            row[f"t={t}"] = {"own": float(torch.cat(own).mean()), "other": float(torch.cat(other).mean())}
        rows.append(row)
        print(f"{m}: chance {row['chance']:.3f} (other {row['chance_other']:.3f}); " + "; ".join(
            f"t={t}: own {row[f't={t}']['own']:.3f}, other {row[f't={t}']['other']:.3f}" for t in a.at), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
