"""Training batches: the shapes-world generator or a CSV data set, through one loader.

Batches are bucketed by (frames, height, width) so clips of different durations, sizes and
aspect ratios train together (one bucket a batch, as Open-Sora does). Every batch is a pure
function of (config, step): the bucket, the clips and the captions are drawn from generators
seeded by (seed, step) and each sample's draws by its global index. So a resumed run sees the
same data as an uninterrupted one, and N DDP ranks that take every N-th sample of the global
batch see exactly the samples a single process would.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch

from ..world import clip_captions, make_clip
from ..world.scene import (check_spin_degrees, check_spin_direction, closest_approach, num_objects_of, sample_scene,
                           spin_key)
from ..world.vocab import HELD_OUT_WORDS, MOTIONS
from .dataset import VideoRecord, read_metadata
from .synth import clip_seed, worker_pool
from .video_io import read_video


@dataclass
class DataConfig:
    source: Literal["world", "csv"] = "world"
    csv: str | None = None  # metadata.csv for source = "csv"
    # (frames, height, width) buckets; frames 4k+1, sizes multiples of the model stride
    buckets: list[tuple[int, int, int]] = field(default_factory=lambda: [(17, 64, 64)])
    bucket_weights: list[float] | None = None  # world: how often each bucket is drawn
    num_clips: int | None = None  # world: a fixed pool of N clips; None = a fresh clip every sample
    # world pool: how many times each 1-object and 2-object clip appears per epoch; [1, 2] trains
    # two-object scenes twice as often. None = once each (the plain pool)
    object_count_repeats: list[int] | None = None
    # world pool: clips with an object making one of these motions appear this many times more
    # per epoch (times object_count_repeats), e.g. {spinning = 3}; motions as in vocab.MOTIONS.
    # Needs one bucket: a clip's motions depend on its frame count. None = no motion weighting
    motion_repeats: dict[str, int] | None = None
    # world: spinning objects turn lo-hi degrees over the clip instead of the world's 115-240
    # (kinema.world.respin; captions unchanged; WORLD.md asks >= 90); per shape as a table, e.g.
    # {square = [110, 160]} (a shape left out keeps the world's turns). None = the world's turns
    spin_degrees: list[float] | dict[str, list[float]] | None = None
    # world: "counterclockwise" or "clockwise": every spinning object turns that way (WORLD.md's
    # captions name no direction; the world draws either). "both" = the world's own
    spin_direction: Literal["both", "counterclockwise", "clockwise"] = "both"
    # world pool: leave out two-object clips whose objects come nearer than this fraction of the
    # shorter side (circumcircle to circumcircle, kinema.world.closest_approach), so the model learns
    # layouts that keep them apart; the clips kept are unchanged. Needs one bucket. None = every clip
    min_gap: float | None = None
    caption: Literal["text", "short_text", "both"] = "both"  # both: each sample draws one
    exclude_words: list[str] = field(default_factory=list)  # held-out wording, never trained on
    hold_out_wording: bool = False  # world: also exclude vocab.HELD_OUT_WORDS (the default model's list)
    fps: float = 8.0
    seed: int = 0
    # world: processes that render a batch's new clips and write their captions (0: this process).
    # The batches are the same for any value; on a GPU the first epoch of a pool is otherwise bound
    # by one core's rendering (~13 ms a 64x64x17 clip)
    workers: int = 0

    def __post_init__(self):
        if not self.buckets:
            raise ValueError("data.buckets is empty")
        for f, h, w in self.buckets:
            if f < 1 or (f - 1) % 4:
                raise ValueError(f"bucket frames must be 4k+1 (1, 5, 9, 17, ...), got {f}")
            if h < 32 or w < 32:
                raise ValueError(f"bucket sizes must be >= 32, got {h}x{w}")
        if self.bucket_weights is not None and len(self.bucket_weights) != len(self.buckets):
            raise ValueError("data.bucket_weights must have one weight per bucket")
        if self.source == "csv" and not self.csv:
            raise ValueError("data.source = 'csv' needs data.csv = path/to/metadata.csv")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"data.workers must be an integer >= 0, got {self.workers!r}")
        if self.object_count_repeats is not None:
            reps = self.object_count_repeats
            if self.source != "world" or self.num_clips is None:
                raise ValueError("data.object_count_repeats weights a world pool: it needs source = 'world' "
                                 "and num_clips")
            if len(reps) != 2 or any(not isinstance(r, int) or r < 0 for r in reps) or not any(reps):
                raise ValueError(f"data.object_count_repeats must be two counts >= 0 (1-object, 2-object "
                                 f"clips per epoch), not both 0; got {reps}")
        if self.spin_degrees is not None:
            if self.source != "world":
                raise ValueError("data.spin_degrees changes world clips: it needs source = 'world'")
            check_spin_degrees(self.spin_degrees, "data.spin_degrees")
        if check_spin_direction(self.spin_direction, "data.spin_direction") and self.source != "world":
            raise ValueError("data.spin_direction changes world clips: it needs source = 'world'")
        if self.min_gap is not None:
            if self.source != "world" or self.num_clips is None or len(self.buckets) != 1:
                raise ValueError("data.min_gap filters a world pool: it needs source = 'world', num_clips "
                                 "and exactly one bucket")
            if not 0.0 <= self.min_gap < 0.5:
                raise ValueError(f"data.min_gap is a fraction of the canvas's shorter side in [0, 0.5), "
                                 f"got {self.min_gap}")
        if self.motion_repeats is not None:
            if self.source != "world" or self.num_clips is None or len(self.buckets) != 1:
                raise ValueError("data.motion_repeats weights a world pool: it needs source = 'world', "
                                 "num_clips and exactly one bucket")
            for motion, r in self.motion_repeats.items():
                if motion not in MOTIONS:
                    raise ValueError(f"data.motion_repeats: unknown motion {motion!r}; known: {', '.join(MOTIONS)}")
                if not isinstance(r, int) or r < 1:
                    raise ValueError(f"data.motion_repeats[{motion!r}] must be an integer >= 1, got {r!r}")


def world_spin(cfg: DataConfig) -> tuple[tuple[float, float] | None, str | None] | None:
    """(spin degrees or None, spin direction or None) with which a world clip of `cfg` is respun
    (kinema.world.scene.respin), or None for the world's own spins."""
    degrees = None if cfg.spin_degrees is None else check_spin_degrees(cfg.spin_degrees, "data.spin_degrees")
    direction = check_spin_direction(cfg.spin_direction)
    return (degrees, direction) if degrees or direction else None


def _world_work(job: tuple) -> tuple[np.ndarray | None, tuple[str, str]]:
    """(frames or None, (caption, short caption)) of one world clip; in a render worker or not."""
    seed, (f, h, w), fps, exclude, render, spin = job
    if render:
        degrees, direction = spin or (None, None)
        clip = make_clip(seed, w, h, f, fps, exclude_words=exclude, spin_degrees=degrees, spin_direction=direction)
        return clip.frames, (clip.text, clip.short_text)
    return None, clip_captions(seed, w, h, f, fps, exclude_words=exclude)


def _rng(*keys) -> random.Random:
    digest = hashlib.blake2b(":".join(map(str, keys)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def to_model_range(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    return x / 127.5 - 1.0


def from_model_range(x: torch.Tensor) -> np.ndarray:
    """(B, 3, T, H, W) in [-1, 1] -> (B, T, H, W, 3) uint8."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()


def fit_to_bucket(frames: np.ndarray, bucket: tuple[int, int, int], start: int) -> torch.Tensor:
    """A real video to a bucket: `f` frames from `start`, resized to cover (h, w), centre-cropped.
    Returns (3, f, h, w) in [-1, 1]."""
    f, h, w = bucket
    x = to_model_range(frames[start:start + f])  # (3, f, H0, W0)
    H0, W0 = x.shape[-2:]
    scale = max(h / H0, w / W0)
    if (H0, W0) != (h, w):
        size = (max(h, round(H0 * scale)), max(w, round(W0 * scale)))
        x = torch.nn.functional.interpolate(x.transpose(0, 1), size=size, mode="bilinear",
                                            antialias=True, align_corners=False).transpose(0, 1)
        top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
        x = x[..., top:top + h, left:left + w]
    return x.contiguous()


class VideoBatches:
    """batch(step) -> {"video": (b, 3, T, H, W) in [-1, 1], "text": [str], "keys", "index", "bucket",
    "with_video"}, where b = batch_size / world_size and this rank takes global samples rank,
    rank + world_size, ...

    batch(step, skip) leaves out the videos of the samples whose key `skip` accepts (a trainer
    passes "its latent is cached"): they are neither rendered nor read, only captioned. Then
    "video" holds the samples listed in "with_video" (None if none), in that order. Rendering a
    clip costs more than a tiny DiT's step, so a run over a fixed pool renders each clip once."""

    def __init__(self, cfg: DataConfig, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"the global batch size {batch_size} must divide by the {world_size} ranks")
        self.cfg, self.batch_size, self.rank, self.world_size = cfg, batch_size, rank, world_size
        self.by_bucket: list[list[VideoRecord]] = []
        self._texts: dict[tuple, tuple[str, str]] = {}  # world pool key -> (caption, short caption)
        self._scene_facts: dict[tuple, tuple[tuple[str, ...], float]] = {}  # pool key -> (motions, closest approach)
        self._lengths: dict[str, int] = {}  # csv: frames a video decoded to (its clip's start depends on it)
        self._epoch: tuple[int, list[int]] | None = None  # world pool: (epoch, its shuffled clip order)
        self._workers = None  # data.workers > 0: the process pool, started by the first batch
        self._spin = world_spin(cfg)
        if cfg.source == "world" and cfg.num_clips is not None:
            self._pool = list(range(cfg.num_clips))  # one epoch's clips, before its shuffle
            if cfg.object_count_repeats is not None:
                reps = cfg.object_count_repeats
                self._pool = [i for i in self._pool
                              for _ in range(reps[num_objects_of(clip_seed(cfg.seed, i)) - 1])]
                if not self._pool:
                    raise ValueError(f"data.object_count_repeats={reps} leaves no clip of the pool")
            if cfg.min_gap:
                gap = cfg.min_gap * min(cfg.buckets[0][1:])
                self._pool = [i for i in self._pool if self._pool_facts(i)[1] >= gap]
                if not self._pool:
                    raise ValueError(f"data.min_gap={cfg.min_gap} leaves no clip of the pool")
            if cfg.motion_repeats:
                self._pool = self._weight_by_motion(self._pool)
        if cfg.source == "csv":
            self._assign_csv_buckets(read_metadata(cfg.csv))

    def _weight_by_motion(self, pool: list[int]) -> list[int]:
        """The pool with each clip repeated motion_repeats[m] times more for the largest such
        factor among its objects' motions m (scenes drawn, not rendered: ~4 ms a clip)."""
        factor: dict[int, int] = {}
        for i in dict.fromkeys(pool):
            motions = self._pool_facts(i)[0]
            factor[i] = max((self.cfg.motion_repeats.get(m, 1) for m in motions), default=1)
        return [i for i in pool for _ in range(factor[i])]

    def pool_key(self, index: int, bucket: int = 0) -> tuple:
        """The latent-cache key of world pool clip `index` in `bucket`, as training files it."""
        return self._clip_key(clip_seed(self.cfg.seed, index), bucket)

    def _clip_key(self, seed: int, bucket: int) -> tuple:
        key = ("world", seed, *self.cfg.buckets[bucket])
        if self._spin is not None and "spinning" in self._motions(key):  # other pixels: another latent
            degrees, direction = self._spin
            key += ("spin", *spin_key(degrees)) if degrees else ()
            key += ("turning", direction) if direction else ()
        return key

    def _motions(self, key: tuple) -> tuple[str, ...]:
        """The motions of the pool clip ("world", seed, f, h, w)'s objects: motion_repeats and the
        spin settings read them."""
        return self._facts(key)[0]

    def _pool_facts(self, index: int) -> tuple[tuple[str, ...], float]:
        """_facts of pool clip `index` in the one bucket (motion_repeats and min_gap need one)."""
        return self._facts(("world", clip_seed(self.cfg.seed, index), *self.cfg.buckets[0]))

    def _facts(self, key: tuple) -> tuple[tuple[str, ...], float]:
        """(its objects' motions, how near they come in pixels) of the pool clip ("world", seed, f,
        h, w), from its scene (drawn, not rendered: ~5 ms a clip), once a clip."""
        if key not in self._scene_facts:
            _, seed, f, h, w = key[:5]
            scene = sample_scene(seed, w, h, f, self.cfg.fps)
            self._scene_facts[key] = tuple(o.motion for o in scene.objects), closest_approach(scene)
        return self._scene_facts[key]

    def _assign_csv_buckets(self, records: list[VideoRecord]) -> None:
        """Each video goes to the bucket closest to its aspect ratio that it has frames for."""
        self.by_bucket = [[] for _ in self.cfg.buckets]
        unknown = [r for r in records if not (r.num_frames and r.height and r.width)]
        if unknown:
            raise ValueError(f"{len(unknown)} rows of {self.cfg.csv} lack num_frames/height/width; run "
                             f"`kinema data check {self.cfg.csv} --fill` first")
        for r in records:
            fits = [i for i, (f, _, _) in enumerate(self.cfg.buckets) if f <= r.num_frames]
            if fits:
                best = min(fits, key=lambda i: (abs(np.log((r.width / r.height) / (self.cfg.buckets[i][2] / self.cfg.buckets[i][1]))),
                                                -self.cfg.buckets[i][1] * self.cfg.buckets[i][2]))
                self.by_bucket[best].append(r)
        if not any(self.by_bucket):
            raise ValueError(f"no video in {self.cfg.csv} has enough frames for any bucket {self.cfg.buckets}")

    def bucket_for(self, step: int) -> int:
        rng = _rng(self.cfg.seed, "bucket", step)
        if self.cfg.source == "csv":
            weights = [len(b) for b in self.by_bucket]
        else:
            weights = self.cfg.bucket_weights or [1.0] * len(self.cfg.buckets)
        return rng.choices(range(len(self.cfg.buckets)), weights=weights)[0]

    def _caption(self, texts: tuple[str, str], g: int) -> str:
        if self.cfg.caption == "both":
            return texts[_rng(self.cfg.seed, "caption", g).random() < 0.5]
        return texts[self.cfg.caption == "short_text"]

    @property
    def excluded_words(self) -> list[str]:
        held_out = list(HELD_OUT_WORDS) if self.cfg.hold_out_wording else []
        return [*self.cfg.exclude_words, *held_out]

    def _pool_clip(self, g: int) -> int:
        """The pool index of global sample g: epochs of the (repeat-weighted) pool, each shuffled."""
        n = len(self._pool)
        epoch = g // n
        if self._epoch is None or self._epoch[0] != epoch:  # one shuffle per epoch, not per sample
            order = list(self._pool)
            _rng(self.cfg.seed, "epoch", epoch).shuffle(order)
            self._epoch = (epoch, order)
        return self._epoch[1][g % n]

    def sample(self, g: int, bucket: int, skip: Callable[[tuple], bool] | None = None
               ) -> tuple[torch.Tensor | None, str, tuple | None]:
        """Global sample g of a batch drawn from `bucket`: (video, caption, key). The key names
        the clip (so its latent can be cached); None for a fresh world clip, never seen again.
        The video is None when `skip(key)` holds and the clip was made once before."""
        f, h, w = self.cfg.buckets[bucket]
        if self.cfg.source == "world":
            key, job = self._world_job(g, bucket, skip)
            return self._world_sample(g, key, job and _world_work(job))
        rng = _rng(self.cfg.seed, "csv", g)
        rec, u = rng.choice(self.by_bucket[bucket]), rng.random()
        caption = self._caption((rec.text, rec.short_text or rec.text), g)
        path = str(rec.path)

        def key(length: int) -> tuple:  # the clip: f frames from a start drawn by u
            return path, min(int(u * (length - f + 1)), length - f), f, h, w

        if path in self._lengths and skip is not None and skip(key(self._lengths[path])):
            return None, caption, key(self._lengths[path])
        frames = read_video(rec.path)
        self._lengths[path] = frames.shape[0]
        k = key(frames.shape[0])
        return fit_to_bucket(frames, (f, h, w), k[1]), caption, k

    def _world_job(self, g: int, bucket: int, skip: Callable[[tuple], bool] | None) -> tuple[tuple | None, tuple | None]:
        """World sample g: (its pool key or None, the job that makes what is missing: None when
        its latent is skipped and its captions are known, else _world_work's argument)."""
        f, h, w = self.cfg.buckets[bucket]
        n = self.cfg.num_clips
        seed = clip_seed(self.cfg.seed, g if n is None else self._pool_clip(g))  # a pool reshuffles every epoch
        key = None if n is None else self._clip_key(seed, bucket)
        skipped = key is not None and skip is not None and skip(key)  # e.g. its latent is on disk
        if skipped and key in self._texts:
            return key, None
        return key, (seed, (f, h, w), self.cfg.fps, tuple(self.excluded_words), not skipped, self._spin)

    def _world_sample(self, g: int, key: tuple | None, made: tuple | None) -> tuple:
        """sample()'s answer from _world_work's result (None: nothing was made)."""
        if made is None:
            return None, self._caption(self._texts[key], g), key
        frames, texts = made
        if key is not None:
            self._texts[key] = texts
        return None if frames is None else to_model_range(frames), self._caption(texts, g), key

    def _world_batch(self, idx: list[int], bucket: int, skip) -> list[tuple]:
        """sample() for every g in idx, the clips rendered by `workers` processes."""
        if self._workers is None:
            self._workers = worker_pool(self.cfg.workers)
        jobs = [self._world_job(g, bucket, skip) for g in idx]
        todo = [job for _, job in jobs if job is not None]
        made = iter(self._workers.map(_world_work, todo, chunksize=max(1, len(todo) // (4 * self.cfg.workers))))
        return [self._world_sample(g, key, job and next(made)) for g, (key, job) in zip(idx, jobs)]

    def training_captions(self, fresh_sample: int = 4000) -> list[str]:
        """Every caption this data can show a model (what its training vocabulary is counted
        from, kinema/text/refine.py): a world pool's clips, both caption kinds as `caption` picks;
        the first `fresh_sample` clips of a fresh world stream; every row of a CSV."""
        kinds = {"both": (0, 1), "text": (0,), "short_text": (1,)}[self.cfg.caption]
        if self.cfg.source == "csv":
            rows = [(r.text, r.short_text or r.text) for b in self.by_bucket for r in b]
        else:
            f, h, w = self.cfg.buckets[0]
            n = self.cfg.num_clips if self.cfg.num_clips is not None else fresh_sample
            jobs = [(clip_seed(self.cfg.seed, i), (f, h, w), self.cfg.fps, tuple(self.excluded_words), False, None)
                    for i in range(n)]
            if self.cfg.workers > 0:
                if self._workers is None:
                    self._workers = worker_pool(self.cfg.workers)
                rows = [texts for _, texts in self._workers.map(_world_work, jobs, chunksize=256)]
            else:
                rows = [_world_work(job)[1] for job in jobs]
        return [row[k] for row in rows for k in kinds]

    def close(self) -> None:
        """Ends the render workers (data.workers > 0); batch() starts them again if called."""
        if self._workers is not None:
            self._workers.terminate()
            self._workers = None

    def batch(self, step: int, skip: Callable[[tuple], bool] | None = None) -> dict:
        bucket = self.bucket_for(step)
        idx = [step * self.batch_size + i for i in range(self.rank, self.batch_size, self.world_size)]
        if self.cfg.source == "world" and self.cfg.workers > 0:
            samples = self._world_batch(idx, bucket, skip)
        else:
            samples = [self.sample(g, bucket, skip) for g in idx]
        with_video = [i for i, s in enumerate(samples) if s[0] is not None]
        video = torch.stack([samples[i][0] for i in with_video]) if with_video else None
        return {"video": video, "with_video": with_video, "text": [s[1] for s in samples],
                "keys": [s[2] for s in samples], "index": idx, "bucket": self.cfg.buckets[bucket]}
