"""Can a small learned verifier pick the model's best video? (docs/default-model.md: not at this size.)

CLIP reranking, as DALL-E 1 did it, on the shapes world: a video-text matching model learns from
world clips (seeds from VERIFIER_SEED, which no suite, pool or probe uses; no held-out wording)
whether a caption describes a clip's latent. Its negatives are hard: the captions of the same scene
with one attribute changed (colour, shape, size, motion, background) or, with two objects, an
attribute swapped between them, and another clip's caption. The model: the clip's latent in 2x2
patches (80 tokens) and the caption's MiniLM states, one small transformer over both, a score from
a CLS token. Then, for each tuning prompt, the 4 candidates of `scripts/self_rerank.py` (same seeds)
are ranked by it, and the judge counts what the top one passes. Nothing of the judge or the
prompt parser is used to train or to rank.

    python scripts/verifier_probe.py --clips 4000 --steps 2000 --first 200 300 --threads 1
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import random
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from kinema.data.loader import to_model_range
from kinema.eval.suite import suite_prompts
from kinema.pipelines import KinemaPipeline
from kinema.world import make_clip
from kinema.world import vocab as V
from kinema.world.captions import captions
from self_rerank import candidates  # scripts/: a suite prompt's candidate videos and their latents

VERIFIER_SEED = 3_300_000_000  # training clips; held-out check clips from 3,400,000,000


def hard_negatives(scene, rng: random.Random, tries: int = 6) -> list[str]:
    """Captions (both kinds) of scenes that differ from `scene` in one attribute, or by a swap of one
    attribute between its two objects."""
    objs, out = list(scene.objects), []
    kinds = ["colour", "shape", "size", "motion", "background"] + (["swap"] if len(objs) == 2 else [])
    for _ in range(tries):
        kind, i = rng.choice(kinds), rng.randrange(len(objs))
        o, new, changed = objs[i], list(objs), scene
        if kind == "colour":
            new[i] = dataclasses.replace(o, colour=rng.choice([c for c in V.OBJECT_COLOURS if all(c != p.colour for p in objs)]))
        elif kind == "shape":
            new[i] = dataclasses.replace(o, shape=rng.choice([s for s in V.SHAPE_WORDS if s != o.shape]))
        elif kind == "size":
            new[i] = dataclasses.replace(o, size="big" if o.size == "small" else "small")
        elif kind == "motion":
            m = rng.choice([m for m in V.MOTIONS if m != o.motion])
            new[i] = dataclasses.replace(o, motion=m, speed=o.speed if m in V.AXIS_MOTIONS else None)
        elif kind == "background":
            changed = dataclasses.replace(scene, background=rng.choice([b for b in V.BACKGROUNDS if b != scene.background]))
        else:
            a, b = objs
            field = rng.choice(["motion", "colour", "shape"])
            if getattr(a, field) == getattr(b, field):
                continue
            kw_a, kw_b = {field: getattr(b, field)}, {field: getattr(a, field)}
            if field == "motion":
                kw_a["speed"], kw_b["speed"] = b.speed, a.speed
            new = [dataclasses.replace(a, **kw_a), dataclasses.replace(b, **kw_b)]
        if kind != "background":
            changed = dataclasses.replace(scene, objects=tuple(new))
        out += captions(changed, V.HELD_OUT_WORDS)
    return out


@torch.no_grad()
def world_set(pipe: KinemaPipeline, n: int, seed0: int, rng: random.Random):
    """(latents (n, C, T', h, w) fp16, [[detailed, short]], [hard negative captions]) of n world clips."""
    lat, pos, neg = [], [], []
    for i in range(n):
        clip = make_clip(seed0 + i, exclude_words=V.HELD_OUT_WORDS)
        lat.append(pipe.vae.normalize(pipe.vae.encode(to_model_range(clip.frames)[None]).mean)[0].half())
        pos.append([clip.text, clip.short_text])
        neg.append(hard_negatives(clip.scene, rng))
    return torch.stack(lat), pos, neg


class Verifier(nn.Module):
    """score(latent z (B, C, T', h, w), caption states (B, L, E), mask (B, L)) -> (B,) logits."""

    def __init__(self, channels: int, tokens: int, text_dim: int, text_tokens: int, d: int = 128, depth: int = 3,
                 heads: int = 4):
        super().__init__()
        self.patch = nn.Linear(channels * 4, d)
        self.video_pos = nn.Parameter(torch.randn(1, tokens, d) * 0.02)
        self.text = nn.Linear(text_dim, d)
        self.text_pos = nn.Parameter(torch.randn(1, text_tokens, d) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))

    def forward(self, z: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, T, h, w = z.shape
        x = z.reshape(B, C, T, h // 2, 2, w // 2, 2).permute(0, 2, 3, 5, 1, 4, 6).reshape(B, -1, C * 4)  # (B, N, 4C)
        seq = torch.cat([self.cls.expand(B, -1, -1), self.patch(x) + self.video_pos,
                         self.text(text) + self.text_pos], 1)
        pad = torch.cat([torch.zeros(B, 1 + x.shape[1], dtype=torch.bool), ~mask], 1)
        return self.head(self.blocks(seq, src_key_padding_mask=pad)[:, 0])[:, 0]


def encode(pipe: KinemaPipeline, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM states (N, max_length, E) fp16 and mask (N, max_length) bool: every encode pads to the
    encoder's max_length, so batches stack."""
    states, masks = [], []
    for k in range(0, len(texts), 256):
        s, m = pipe.text_encoder.encode(texts[k:k + 256])
        states.append(s.half())
        masks.append(m)
    return torch.cat(states), torch.cat(masks)


def train(pipe: KinemaPipeline, clips: int, steps: int, batch: int = 32, lr: float = 3e-4, log=print) -> Verifier:
    rng = random.Random(0)
    lat, pos, neg = world_set(pipe, clips, VERIFIER_SEED, rng)
    texts = sorted({t for p in pos for t in p} | {t for q in neg for t in q})
    index = {t: i for i, t in enumerate(texts)}
    states, masks = encode(pipe, texts)
    log(f"{clips} clips, {len(texts)} captions encoded")
    model = Verifier(lat.shape[1], math.prod(lat.shape[2:]) // 4, states.shape[-1], states.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    t0 = time.time()
    for step in range(steps):
        zs, ts, ys = [], [], []
        for i in (rng.randrange(clips) for _ in range(batch)):  # each clip: its caption, 2 hard negatives, another clip's
            other = lambda: index[rng.choice(pos[rng.randrange(clips)])]  # noqa: E731
            zs += [lat[i]] * 4
            ts += [index[rng.choice(pos[i])]] + [index[rng.choice(neg[i])] if neg[i] else other() for _ in range(2)] + [other()]
            ys += [1.0, 0.0, 0.0, 0.0]
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.binary_cross_entropy_with_logits(model(torch.stack(zs).float(), states[ts].float(), masks[ts]),
                                                  torch.tensor(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step} loss {loss.item():.3f} ({time.time() - t0:.0f} s)")
    return model.eval()


@torch.no_grad()
def score(model: Verifier, pipe: KinemaPipeline, z: torch.Tensor, texts: list[str]) -> torch.Tensor:
    s, m = encode(pipe, texts)
    return model(z.float(), s.float(), m)


@torch.no_grad()
def held_out_accuracy(model: Verifier, pipe: KinemaPipeline, n: int) -> tuple[int, int]:
    """(wins, pairs): how often a new world clip's caption scores above one of its hard negatives."""
    lat, pos, neg = world_set(pipe, n, VERIFIER_SEED + 100_000_000, random.Random(1))
    wins = pairs = 0
    for i in range(n):
        if neg[i]:
            s = score(model, pipe, lat[i:i + 1].expand(1 + len(neg[i]), -1, -1, -1, -1), [pos[i][0]] + neg[i])
            wins, pairs = wins + int((s[1:] < s[0]).sum()), pairs + len(neg[i])
    return wins, pairs


@torch.no_grad()
def rerank(model: Verifier, pipe: KinemaPipeline, first: int, count: int, n: int) -> dict:
    """Passes of candidate 0, the verifier's pick, a random candidate (mean) and an oracle."""
    out = {"prompts": 0, "candidate 0": 0, "verifier": 0, "random": 0.0, "oracle": 0}
    for p in suite_prompts("shapes-v1-trained", first + count)[first:]:
        cands = candidates(pipe, p, n)
        passed = [ok for ok, _ in cands]
        pick = int(score(model, pipe, torch.cat([z for _, z in cands]), [pipe.refine([p.text])[0]] * n).argmax())
        out["prompts"] += 1
        out["candidate 0"] += passed[0]
        out["verifier"] += passed[pick]
        out["random"] += sum(passed) / n
        out["oracle"] += any(passed)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--clips", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--check-clips", type=int, default=150, help="new world clips for the held-out check")
    ap.add_argument("--first", type=int, nargs="+", default=[200, 300], help="tuning prompt blocks to rerank")
    ap.add_argument("--prompts", type=int, default=100, help="prompts a block")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    pipe = KinemaPipeline.from_pretrained(a.model)
    model = train(pipe, a.clips, a.steps, log=lambda s: print(s, flush=True))
    wins, pairs = held_out_accuracy(model, pipe, a.check_clips)
    print(f"held-out world clips: the caption above a hard negative {wins} / {pairs}", flush=True)
    for first in a.first:
        r = rerank(model, pipe, first, a.prompts, a.candidates)
        print(f"prompts {first}-{first + r['prompts'] - 1}: candidate 0 {r['candidate 0']}, verifier's pick "
              f"{r['verifier']}, random {r['random']:.1f}, oracle {r['oracle']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
