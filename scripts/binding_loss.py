"""Does the denoiser bind attributes to objects? Flow loss with the true caption against swapped ones.

On fresh two-object clips whose objects differ in motion, colour and shape, every model is scored
(velocity MSE, the same clips, noise and time grid as scripts/val_loss.py) with:

    true     the clip's own caption (detailed and short alternate)
    motion   the same caption written with the two objects' motions (and speeds) swapped
    colour   ... with their colours swapped
    shape    ... with their shapes swapped
    wrong    ... with both motions replaced by motions neither object makes
    reworded the true scene in other words (captions drawn with another seed)
    other    another clip's caption
    empty    no caption

A swapped caption names the same words as the true one, so a model that reads the caption as a
bag of words scores it like the true one; one that binds each motion to its object scores it
worse. `wrong` tells whether the model reads the motion words at all. A swap can change the
wording around it too (the caption writer draws synonyms from one random stream, so after a swap
"small circle" may come out "little dot"); `reworded` is the cost of that alone. The binding index of an attribute is (loss swapped - loss true) / (loss empty - loss true):
0 for no binding, about 1 when the swap costs as much as losing the whole caption.

    python scripts/binding_loss.py kinema/weights/default runs/default-refiner/model --clips 96
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kinema.data.loader import to_model_range
from kinema.data.synth import clip_seed
from kinema.pipelines.pipeline import dit_folder, load_dit
from kinema.world import make_clip
from kinema.world.captions import captions
from kinema.world.scene import Scene, allowed_motions
from kinema.world.vocab import AXIS_MOTIONS, HELD_OUT_WORDS
from val_loss import add_common_args, encode_frames, load_shared_parts, losses

SWAPS = {"motion": ("motion", "speed"), "colour": ("colour",), "shape": ("shape",)}
VARIANTS = ("true", *SWAPS, "wrong", "reworded", "other", "empty")


def swapped(scene: Scene, fields: tuple[str, ...]) -> Scene:
    """The scene with `fields` exchanged between its two objects (pixels untouched: captions only)."""
    a, b = scene.objects
    return dataclasses.replace(scene, objects=(dataclasses.replace(a, **{f: getattr(b, f) for f in fields}),
                                               dataclasses.replace(b, **{f: getattr(a, f) for f in fields})))


def wrong_motions(scene: Scene) -> Scene:
    """The scene with each object's motion replaced by one that neither object makes (pixels untouched)."""
    rng = random.Random(scene.seed)
    taken = {o.motion for o in scene.objects}
    objects = []
    for o in scene.objects:
        motion = rng.choice([m for m in allowed_motions(o.shape, scene.num_frames) if m not in taken])
        objects.append(dataclasses.replace(o, motion=motion, speed=rng.choice(("slow", "quick")) if motion in AXIS_MOTIONS else None))
    return dataclasses.replace(scene, objects=tuple(objects))


def binding_set(clips: int, seed: int) -> tuple[list[torch.Tensor], dict[str, list[str]]]:
    """Frames in model range and the caption of every variant, for `clips` two-object clips whose
    objects differ in motion, colour and shape (so every swap changes the caption)."""
    frames, texts = [], {k: [] for k in VARIANTS}
    i = 0
    while len(frames) < clips:
        clip = make_clip(clip_seed(seed, i), 64, 64, 17, num_objects=2, exclude_words=HELD_OUT_WORDS)
        i += 1
        a, b = clip.scene.objects
        if a.motion == b.motion or a.colour == b.colour or a.shape == b.shape:
            continue
        kind = len(frames) % 2  # detailed and short alternate, as training draws both
        frames.append(to_model_range(clip.frames))  # (3, T, H, W)
        texts["true"].append((clip.text, clip.short_text)[kind])
        for name, fields in SWAPS.items():
            texts[name].append(captions(swapped(clip.scene, fields), HELD_OUT_WORDS)[kind])
        texts["wrong"].append(captions(wrong_motions(clip.scene), HELD_OUT_WORDS)[kind])
        texts["reworded"].append(captions(dataclasses.replace(clip.scene, seed=clip.scene.seed + 1), HELD_OUT_WORDS)[kind])
        texts["empty"].append("")
    texts["other"] = texts["true"][1:] + texts["true"][:1]
    return frames, texts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, clips=96, seed=11)
    a = ap.parse_args(argv)
    parts = load_shared_parts(a)
    if parts is None:
        return 2
    vae, encoder = parts
    t0 = time.perf_counter()
    frames, texts = binding_set(a.clips, a.seed)
    z = encode_frames(vae, frames)  # (n, C, T', H', W')
    with torch.no_grad():
        states = {k: encoder(v) for k, v in texts.items()}
    L = max(s.shape[1] for s, _ in states.values())  # one length for all variants: pad states and masks
    states = {k: (torch.nn.functional.pad(s, (0, 0, 0, L - s.shape[1])), torch.nn.functional.pad(m, (0, L - m.shape[1])))
              for k, (s, m) in states.items()}
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(a.seed))
    times = (torch.arange(a.times) + 0.5) / a.times
    print(f"{a.clips} two-object clips; e.g.\n" + "\n".join(f"  {k}: {v[0]!r}" for k, v in texts.items())
          + f"\n({time.perf_counter() - t0:.0f} s)")
    rows, swap_costs = [], []
    for m in a.models:
        dit = load_dit(dit_folder(m)).eval()
        per = {k: losses(dit, z, s, mask, times, noise, a.batch).mean(1) for k, (s, mask) in states.items()}  # (n,) each
        gap = lambda k: per[k] - per["true"]  # noqa: E731  paired by clip
        row = {"model": m, "loss_true": float(per["true"].mean())}
        for k in VARIANTS[1:]:
            row[f"cost_{k}"] = float(gap(k).mean())
            row[f"stderr_{k}"] = float(gap(k).std() / np.sqrt(len(gap(k))))
        for k in SWAPS:
            row[f"binding_{k}"] = row[f"cost_{k}"] / row["cost_empty"] if row["cost_empty"] else None
        rows.append(row)
        swap_costs.append({k: gap(k) for k in SWAPS})
        print(f"{m}: loss {row['loss_true']:.4f}; cost of a swapped "
              + ", ".join(f"{k} {row[f'cost_{k}']:+.4f} ± {row[f'stderr_{k}']:.4f}" for k in SWAPS)
              + f"; wrong motions {row['cost_wrong']:+.4f}; reworded {row['cost_reworded']:+.4f}; other caption {row['cost_other']:+.4f}, empty {row['cost_empty']:+.4f}; binding index "
              + ", ".join(f"{k} {row[f'binding_{k}'] or 0:.3f}" for k in SWAPS), flush=True)
    for row, costs in zip(rows[1:], swap_costs[1:]):  # paired by clip against the first model
        row["vs_first"] = {}
        for k in SWAPS:
            d = costs[k] - swap_costs[0][k]
            row["vs_first"][k] = {"diff": float(d.mean()), "stderr": float(d.std() / np.sqrt(len(d)))}
        print(f"{row['model']} vs {rows[0]['model']}, cost of a swap (paired): "
              + ", ".join(f"{k} {v['diff']:+.4f} ± {v['stderr']:.4f}" for k, v in row["vs_first"].items()))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
