"""Fit a model's best-of-N verifier on its own judged samples (kinema/models/verifier.py).

    # 0. reader (optional): a scene reader trained on the latents of world clips the DiT's recipe
    #    cached (their scenes are known exactly), for 2 more verifier features
    python scripts/train_verifier.py reader kinema/weights/default --cache runs/cache/latents \\
        --out runs/verifier/reader
    #    (--render N first renders and encodes N world clips into --cache: no DiT run needed;
    #    --noisy trains a reader of x_t at every noise level, a guide for reader guidance and
    #    steering, docs/training.md; --near-miss P renders near misses and trains a reader of them,
    #    with an "unclear" motion: measured worse in session 34)
    # 1. sample: the model's videos of world prompts no eval uses (ids >= 400 of shapes-v1-trained;
    #    the test takes 0-199, tuning 200-399), `--candidates` seeds each, judged by the world's judge
    python scripts/train_verifier.py sample kinema/weights/default --first 400 --prompts 1200 \\
        --candidates 2 --samples runs/verifier/samples.pt
    # 2. fit: the DiT's features of each sample, a logistic regression on pass / fail, written to
    #    MODEL/verifier/ (with the DiT's fingerprint) and, with --num-candidates, the model's default
    python scripts/train_verifier.py fit kinema/weights/default --samples runs/verifier/samples.pt \\
        --reader runs/verifier/reader --num-candidates 4

`sample` appends to its file and skips prompts already in it, so an interrupted run resumes.
`fit` holds out the last `--holdout` share of prompts, reports how often the verifier's pick among
a prompt's candidates passes against the first candidate's and the best possible, then refits on
every sample. The judge labels the samples (the world's ground truth stands in for raters); the
verifier itself reads only latents and prompts.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from kinema.data.loader import to_model_range
from kinema.eval.judge import judge
from kinema.eval.suite import attribute_outcomes, suite_prompts, video_seed
from kinema.models.reader import ReaderConfig, load_reader, reader_accuracy, save_reader, train_reader
from kinema.models.verifier import (VerifierConfig, dit_fingerprint, fit_verifier, save_verifier,
                                    verifier_features)
from kinema.pipelines import KinemaPipeline
from kinema.pipelines.pipeline import INDEX_FILE, VERIFIER_DIR
from kinema.train.latent_cache import LatentCache
from kinema.world.render import render
from kinema.world.parse import swap_objects
from kinema.world.nearmiss import near_miss, near_miss_chance
from kinema.world.scene import sample_scene

FIRST_UNUSED = 400  # prompts 0-199 are the adherence test, 200-399 the tuning set
RENDER_SEED = 7_000_000  # world clips `reader --render` makes (a training pool's seeds are 63-bit hashes: clip_seed)


def sample(a) -> None:
    if a.first < FIRST_UNUSED:
        raise SystemExit(f"--first must be >= {FIRST_UNUSED}: prompts below it are the test's and tuning's")
    path = Path(a.samples)
    rows = torch.load(path, weights_only=False) if path.is_file() else []
    done = {r["id"] for r in rows}
    pipe = KinemaPipeline.from_pretrained(a.model)
    prompts = [p for p in suite_prompts(a.suite, a.first + a.prompts)[a.first:]
               if p.id not in done and p.num_objects in a.objects]
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for n, p in enumerate(prompts, 1):
        for j in range(a.candidates):
            out = pipe(p.text, generator=torch.Generator().manual_seed(video_seed(p.id, j)), output_type="uint8",
                       progress=False, num_candidates=1)
            verdict = judge(out.frames[0], p.text)
            rows.append({"id": p.id, "j": j, "prompt": p.text, "read_as": out.prompts[0], "objects": p.num_objects,
                         "pass": verdict.passed, "attrs": attribute_outcomes(verdict), "z": out.latents[0].clone()})
        if n % 25 == 0 or n == len(prompts):
            torch.save(rows, path)
            rate = sum(r["pass"] for r in rows) / len(rows)
            print(f"[{n}/{len(prompts)} prompts, {time.time() - t0:.0f}s] {len(rows)} samples, {rate:.1%} pass",
                  flush=True)


NEAR_MISS = "near miss"  # a cache key's tag for a clip drawn by kinema.world.nearmiss (then its chance p)


def key_scene(key: tuple):
    """The Scene a world clip's cache key names: ("world", seed, frames, height, width, ...); a
    near-miss key's scene is the near miss of its seed. Other tags (spin settings) change a spinning
    object's turn, not what the reader reads: the world's own scene."""
    _, seed, frames, height, width = key[:5]
    scene = sample_scene(seed, width, height, frames)
    return near_miss(scene, seed, key[6]) if key[5:6] == (NEAR_MISS,) else scene


def cached_world_clips(cache: LatentCache, near_misses: bool = False) -> tuple[torch.Tensor, list]:
    """(N, C, T', h, w) latents and their Scenes: every world clip a latent cache holds on disk
    (a training run's `latent_cache_dir`). A clip's key names its seed and size; the spin settings
    some keys add change a spinning object's turn, not what the reader reads. Near-miss clips
    (`render_world_clips(near_miss_p=p)`) only with `near_misses`: their words are not what they show."""
    latents, scenes = [], []
    for key, z in cache.stored():
        if key[0] != "world" or (key[5:6] == (NEAR_MISS,) and not near_misses):
            continue
        latents.append(z.half())
        scenes.append(key_scene(key))
    shapes = {tuple(z.shape) for z in latents}
    if len(shapes) > 1:
        raise SystemExit(f"{cache.dir} holds latents of several sizes {sorted(shapes)}: one bucket a reader")
    return (torch.stack(latents) if latents else torch.empty(0)), scenes


def render_world_clips(pipe: KinemaPipeline, cache: LatentCache, n: int, first_seed: int = RENDER_SEED,
                       batch: int = 64, near_miss_p: float | None = None) -> None:
    """Render and encode world clips first_seed .. first_seed + n at the model's default size into
    `cache` (the keys a DiT training run's pool uses), skipping those already there: a reader's
    clips without the DiT recipe's cache. `near_miss_p`: each object's motion is a near miss with
    that chance (kinema.world.nearmiss; keyed apart from the world's own clips)."""
    from tqdm import tqdm

    d = pipe.defaults
    tag = () if near_miss_p is None else (NEAR_MISS, near_miss_p)
    keys = [k for k in (("world", first_seed + i, d.num_frames, d.height, d.width, *tag) for i in range(n))
            if k not in cache]
    for i in tqdm(range(0, len(keys), batch), desc="render + encode", unit="batch"):
        part = keys[i:i + batch]
        clips = torch.stack([to_model_range(render(key_scene(k))) for k in part])
        with torch.no_grad():
            z = pipe.vae.normalize(pipe.vae.encode(clips).mode())  # (B, C, T', h, w)
        for k, zk in zip(part, z):
            cache[k] = zk.clone()


def reader(a) -> None:
    pipe = KinemaPipeline.from_pretrained(a.model)
    cache = LatentCache(pipe.vae, a.cache)
    if a.render:
        render_world_clips(pipe, cache, a.render, near_miss_p=a.near_miss)
    z, scenes = cached_world_clips(cache, near_misses=a.near_miss is not None)
    if len(z) < 2 * a.holdout:
        raise SystemExit(f"{cache.dir} holds {len(z)} world clips of this model's autoencoder; a reader needs "
                         f"thousands: run the DiT recipe with latent_cache_dir = {a.cache!r} first")
    print(f"{len(z)} cached world clips {tuple(z.shape[1:])}; {a.holdout} held out", flush=True)
    t0 = time.time()
    cfg = ReaderConfig(latent_channels=z.shape[1], grid=tuple(z.shape[2:]), noisy=a.noisy,
                       unclear=a.near_miss is not None)
    model = train_reader(z[a.holdout:], scenes[a.holdout:], cfg, epochs=a.epochs, seed=a.seed)
    for t in (0.0, 0.3, 0.5, 0.7, 0.9) if a.noisy else (None,):
        acc = reader_accuracy(model, z[:a.holdout].float(), scenes[:a.holdout], t=t)
        print(f"held-out clips read right{'' if t is None else f' at t = {t}'} ({time.time() - t0:.0f}s): "
              + ", ".join(f"{k} {v:.1%}" for k, v in acc.items()), flush=True)
    print(f"wrote {save_reader(model, a.out)}")


def features_of(pipe: KinemaPipeline, rows: list[dict], cfg: VerifierConfig, reader=None, batch: int = 8) -> torch.Tensor:
    out = []
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        prompts = [r["read_as"] for r in part]
        out.append(verifier_features(pipe.dit, pipe.text_encoder.encode, torch.stack([r["z"] for r in part]),
                                     prompts, [swap_objects(p) or p for p in prompts], cfg, reader))
    return torch.cat(out)


def best_of(rows: list[dict], scores: torch.Tensor) -> tuple[int, int, int, int]:
    """(prompts whose highest-scored candidate passes, whose first candidate passes, any passes, prompts)."""
    by: dict[int, list] = {}
    for r, s in zip(rows, scores.tolist()):
        by.setdefault(r["id"], []).append((s, r["j"], r["pass"]))
    picked = sum(max(c)[2] for c in by.values())
    first = sum(min(c, key=lambda x: x[1])[2] for c in by.values())
    return picked, first, sum(any(x[2] for x in c) for c in by.values()), len(by)


def fit(a) -> None:
    rows = [r for path in a.samples for r in torch.load(path, weights_only=False)]  # several files: one set
    pipe = KinemaPipeline.from_pretrained(a.model)
    scene_reader = load_reader(a.reader) if a.reader else None
    cfg = VerifierConfig(hidden=not a.losses_only, l2=a.l2, reader=scene_reader is not None,
                         dit_sha256=dit_fingerprint(pipe.dit))
    t0 = time.time()
    X = features_of(pipe, rows, cfg, scene_reader)
    y = torch.tensor([r["pass"] for r in rows])
    print(f"features of {len(rows)} samples ({y.float().mean():.1%} pass): {X.shape[1]} each, {time.time() - t0:.0f}s")
    ids = sorted({r["id"] for r in rows})
    held = set(ids[int(len(ids) * (1 - a.holdout)):])
    if held:
        train = torch.tensor([r["id"] not in held for r in rows])
        model = fit_verifier(X[train], y[train], cfg, reader=scene_reader)
        rest = [r for r in rows if r["id"] in held]
        picked, first, oracle, n = best_of(rest, model(X[~train]).detach())
        print(f"held-out prompts ({n}): best by the verifier passes {picked}, the first candidate {first}, "
              f"any candidate {oracle}")
    model = fit_verifier(X, y, cfg, reader=scene_reader)
    folder = save_verifier(model, Path(a.model) / VERIFIER_DIR)
    if a.num_candidates:
        index_path = Path(a.model) / INDEX_FILE
        index = json.loads(index_path.read_text())
        index["defaults"]["num_candidates"] = a.num_candidates
        index_path.write_text(json.dumps(index, indent=1))
    print(f"wrote {folder}" + (f"; default num_candidates {a.num_candidates}" if a.num_candidates else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    s = sub.add_parser("sample", help="generate and judge the model's own videos")
    s.add_argument("model")
    s.add_argument("--samples", required=True, help="a .pt file of samples (appended to)")
    s.add_argument("--suite", default="shapes-v1-trained")
    s.add_argument("--first", type=int, default=FIRST_UNUSED)
    s.add_argument("--prompts", type=int, default=1200, help="prompt ids first .. first + prompts")
    s.add_argument("--candidates", type=int, default=2, help="videos (seeds) a prompt")
    s.add_argument("--objects", type=int, nargs="+", default=[1, 2], help="keep prompts with these object counts")
    f = sub.add_parser("fit", help="fit the verifier on the samples and write MODEL/verifier/")
    f.add_argument("model")
    f.add_argument("--samples", nargs="+", required=True)
    f.add_argument("--l2", type=float, default=VerifierConfig.l2)
    f.add_argument("--losses-only", action="store_true", help="the 4 losses per level, no hidden states")
    f.add_argument("--holdout", type=float, default=0.2, help="share of prompts held out for the report first")
    f.add_argument("--num-candidates", type=int, help="write this as the model's default num_candidates")
    f.add_argument("--reader", help="a scene reader folder (the `reader` stage's --out): 2 more features")
    r = sub.add_parser("reader", help="train a scene reader on cached latents of world clips")
    r.add_argument("model")
    r.add_argument("--cache", default="runs/cache/latents", help="the DiT recipe's latent_cache_dir")
    r.add_argument("--out", default="runs/verifier/reader")
    r.add_argument("--render", type=int, default=0, metavar="N",
                   help=f"first render and encode N world clips (seeds {RENDER_SEED}..) into --cache: no DiT run needed")
    r.add_argument("--noisy", action="store_true",
                   help="a noisy reader: reads x_t at any noise level t, a guide for the pipeline's reader_guidance")
    r.add_argument("--near-miss", type=near_miss_chance, metavar="P",
                   help="--render's clips have each object's motion a near miss with chance P, and the reader "
                        "reads motions as the judge measures them, 'unclear' among them (kinema.world.nearmiss)")
    r.add_argument("--epochs", type=int, default=16)
    r.add_argument("--holdout", type=int, default=1000, help="clips kept out of training, to report accuracy")
    r.add_argument("--seed", type=int, default=0)
    for p in (s, f, r):
        p.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    {"fit": fit, "sample": sample, "reader": reader}[a.stage](a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
