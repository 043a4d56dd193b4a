"""`kinema train dit`: flow-matching training of the spacetime DiT on autoencoder latents.

One process or many (torchrun, DDP applied from outside the model). Deterministic and
resumable: every random draw of sample g at step s (noise, timestep, caption dropout) comes
from its own generator seeded by (seed, s, g), and the data is a pure function of the step
(kinema/data/loader.py). So a killed run that resumes from its last checkpoint, and a
2-process run at the same global batch, compute the same per-sample losses as one process.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import signal
import threading
import time
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from .. import flow
from ..autoencoder import CausalVideoVAE
from ..config import to_dict
from ..data.loader import VideoBatches
from ..models.dit import DiT
from ..text import CachedTextEncoder, load_text_encoder
from ..text.refine import caption_tables
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import DiTTrainConfig
from .distributed import (Dist, any_across, barrier, init_distributed, mean_across, shutdown, slow_bf16_warning,
                          wrap_ddp)
from .grounding import AttentionMaps, SceneRegions, grounding_loss, object_token_masks
from .grow import init_from_model
from .latent_cache import LatentCache
from .mix import MixedLatents
from .optim import lr_at, make_adamw


def sample_generator(seed: int, step: int, g: int, what: str) -> torch.Generator:
    """The generator for one draw (`what`) of global sample g at `step`: independent of the
    rank that computes it and of whether the run was resumed."""
    digest = hashlib.blake2b(f"{seed}:{step}:{g}:{what}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


class TextCache:
    """Caption -> (states, mask), computed once and kept in a bounded LRU: a fixed pool repeats
    its captions every epoch, while fresh world clips would grow an unbounded dict. (In memory,
    not kinema.text.CachedTextEncoder's disk cache: fresh clips would write a file a caption.)"""

    def __init__(self, encoder, max_items: int = 8192):
        self.encoder, self.max_items, self.store = encoder, max_items, OrderedDict()

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = list(dict.fromkeys(t for t in texts if t not in self.store))
        if missing:
            states, mask = self.encoder.encode(missing)
            for t, s, m in zip(missing, states, mask):
                self.store[t] = (s.clone(), m.clone())  # own storage, not a view of the batch
        rows = []
        for t in texts:
            self.store.move_to_end(t)
            rows.append(self.store[t])
        while len(self.store) > self.max_items:
            self.store.popitem(last=False)
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


class StopRequest:
    """SIGINT or SIGTERM during training asks the loop to stop after the step in flight, save a
    checkpoint and export the model (a half-applied optimizer step is never saved); another one
    more than REPEAT_S later stops at once. Under torchrun the ranks agree on it every step
    (`any_across`), so all stop after the same step. Outside the main thread (no signal handlers
    there) it never fires."""

    REPEAT_S = 2.0  # torchrun forwards a terminal's Ctrl-C that its workers also got: one request

    def __init__(self):
        self.requested, self._old, self._first = False, {}, None

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self._first is None:
            self.requested, self._first = True, now
        elif now - self._first > self.REPEAT_S:  # a second request: stop at once
            raise KeyboardInterrupt

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    # one foreach op over every tensor, not one op a tensor (the step is host-bound on a GPU)
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def train_dit(cfg: DiTTrainConfig, progress: bool = True,
              on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train (or resume) a DiT as `cfg` says. Returns a summary; at every checkpoint the model
    (EMA weights + autoencoder + text-encoder name) is exported to OUT/model, loadable by
    KinemaPipeline, so the last one is the finished model."""
    d = init_distributed()
    try:
        return _train(cfg, d, progress and d.is_main, on_step)
    finally:
        shutdown(d)


def _train(cfg: DiTTrainConfig, d: Dist, progress: bool, on_step) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    vae = CausalVideoVAE.from_pretrained(cfg.vae).to(d.device).eval().requires_grad_(False)
    # on the training device: on a GPU a pool's first epochs would otherwise wait on the CPU encoding
    # its captions (the same fp32 states; an exported model still encodes on whatever device it runs)
    encoder = load_text_encoder(cfg.text_encoder, max_length=cfg.text_max_length, device=d.device,
                                clause_attention=cfg.text_clause_attention)
    if cfg.text_cache_dir:
        encoder = CachedTextEncoder(encoder, cfg.text_cache_dir)
    text = TextCache(encoder, cfg.text_cache_items)
    dit_cfg = copy.deepcopy(cfg.dit)
    dit_cfg.in_channels, dit_cfg.text_dim = vae.latent_channels, text.encoder.dim
    stride = (vae.temporal_stride, vae.spatial_stride * dit_cfg.patch_size[1], vae.spatial_stride * dit_cfg.patch_size[2])
    for f, h, w in cfg.data.buckets:
        if h % stride[1] or w % stride[2]:
            raise ValueError(f"bucket {f}x{h}x{w}: height and width must be multiples of "
                             f"{stride[1]} (autoencoder stride {vae.spatial_stride} x patch {dit_cfg.patch_size[1]})")
    if cfg.latent_cache_dir and not cfg.cache_latents:
        raise ValueError("latent_cache_dir needs cache_latents = true")
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every rerun
    model = DiT(dit_cfg)
    start = 0
    ckpt = latest_checkpoint(out)
    if ckpt is None and cfg.init_from:  # a fresh run that starts from trained weights
        old_depth, new_latents = init_from_model(model, cfg.init_from, trunk_only=cfg.init_trunk_only)
        if d.is_main and progress:
            tqdm.write(f"init_from {cfg.init_from}: depth {old_depth} -> {dit_cfg.depth}"
                       + (f"; latent layers: {', '.join(new_latents)}" if new_latents else "")
                       + ("; trunk only (latent layers fresh)" if cfg.init_trunk_only else ""))
    model = model.to(d.device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay > 0 else None
    opt = make_adamw(model.parameters(), cfg.optim)
    if ckpt is not None:
        start = load_checkpoint(ckpt, model, ema, opt)
    ddp_model = wrap_ddp(model, d)
    data = VideoBatches(cfg.data, cfg.batch_size, d.rank, d.world_size)
    latent_cache = LatentCache(vae, cfg.latent_cache_dir) if cfg.cache_latents else None
    mix = MixedLatents(cfg.mix_latents, cfg.mix_share) if cfg.mix_latents and cfg.mix_share > 0 else None
    grounding = None
    if cfg.grounding_weight > 0:  # kinema/train/grounding.py
        grounding = _Grounding(AttentionMaps(model), SceneRegions(cfg.data, vae.temporal_stride, dit_cfg.patch_size),
                               _tokenizer(text.encoder))
    objects = None  # where each world clip's objects are, on the latent grid (object_loss_weight)
    if cfg.object_loss_weight > 0:
        objects = SceneRegions(cfg.data, vae.temporal_stride, (1, 1, 1))
    slow = slow_bf16_warning(d.device) if cfg.precision == "bf16" else None
    if slow and d.is_main:
        warnings.warn(slow, stacklevel=2)
    config_json = to_dict(cfg)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config_json, indent=1))
    log_path = out / "log.jsonl"
    bar = tqdm(total=cfg.steps, initial=start, desc="train dit", unit="step", disable=not progress)
    t_last, samples_since = time.perf_counter(), 0
    loss_value = float("nan")
    done, stopping = start, False
    vocabulary = None  # the data's caption words and word pairs, counted at the first export (kinema/text/refine.py)
    with StopRequest() as stop, contextlib.closing(data), bar:  # the render workers and the bar end on any exit
        for step in range(start, cfg.steps):
            batch = data.batch(step, skip=None if latent_cache is None else latent_cache.__contains__)
            x0 = _latents(vae, batch, latent_cache, d)  # (b, C, T', H', W')
            texts = batch["text"]
            if mix is not None:  # some samples replaced by mixed latents (kinema/train/mix.py)
                x0, texts, _ = mix.apply(cfg.seed, step, batch["index"], x0, texts)
            texts = ["" if torch.rand((), generator=sample_generator(cfg.seed, step, g, "drop")).item()
                     < cfg.caption_dropout else t for g, t in zip(batch["index"], texts)]
            states, mask = text(texts)
            tokens = math.prod(s // p for s, p in zip(x0.shape[2:], dit_cfg.patch_size))
            shift = cfg.timestep_shift or flow.timestep_shift_for(tokens)
            noise = torch.stack([torch.randn(x0.shape[1:], generator=sample_generator(cfg.seed, step, g, "noise"))
                                 for g in batch["index"]]).to(d.device)
            t = torch.cat([flow.sample_timesteps(1, sample_generator(cfg.seed, step, g, "t"), shift=shift,
                                                 t_range=cfg.time_range)
                           for g in batch["index"]]).to(d.device)
            xt = flow.interpolate(x0, noise, t)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg.optim, cfg.steps)
            maps = grounding.maps if grounding is not None else contextlib.nullcontext()
            with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"), maps:
                pred = ddp_model(xt, t, states.to(d.device), mask.to(d.device))
            loss = flow_loss = flow.flow_loss(pred.float(), x0, noise)
            if objects is not None:  # "loss" in the log stays the plain flow loss, comparable with other runs
                where = objects(batch, x0.shape[2:]).amax(1).view(x0.shape[0], 1, *x0.shape[2:])  # (b, 1, T', H', W')
                loss = weighted = flow.weighted_flow_loss(pred, x0, noise, 1 + cfg.object_loss_weight * where.to(d.device))
            if grounding is not None:
                words = object_token_masks(grounding.tokenizer, texts, states.shape[1]).to(d.device)
                regions = grounding.regions(batch, x0.shape[2:]).to(d.device)
                ground_loss = grounding_loss(maps.list, words, regions, t)
                loss = loss + cfg.grounding_weight * ground_loss
                maps.list.clear()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip, foreach=True)
            opt.step()
            if ema is not None:
                ema_update(ema, model, cfg.ema_decay)
            loss_value = float(mean_across(flow_loss.detach(), d))
            samples_since += cfg.batch_size
            if on_step is not None:
                on_step(step + 1, loss_value)
            done = step + 1
            stopping = any_across(stop.requested, d) and done < cfg.steps  # Ctrl-C, SIGTERM, `timeout`
            if d.is_main and (done % cfg.log_every == 0 or done == cfg.steps or stopping):  # a stop logs its last step
                now = time.perf_counter()
                rate = samples_since / (now - t_last)
                t_last, samples_since = now, 0
                row = {"step": done, "loss": loss_value, "grad_norm": float(grad_norm),
                       "lr": lr_at(step, cfg.optim, cfg.steps), "samples_per_s": round(rate, 2),
                       "bucket": list(batch["bucket"])}
                if objects is not None:
                    row["weighted_loss"] = float(mean_across(weighted.detach(), d))  # without a grounding term
                if grounding is not None:  # "loss" stays the flow loss, comparable with runs without it
                    row["grounding"] = float(mean_across(ground_loss.detach(), d))
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{rate:.1f}")
            bar.update(1)
            if d.is_main and cfg.preview_every and done % cfg.preview_every == 0:
                _previews(cfg, ema or model, vae, text.encoder, out / "previews", done)
            if d.is_main and (done % cfg.ckpt_every == 0 or done == cfg.steps or stopping):  # a stop keeps its steps
                save_checkpoint(out, done, model, ema, opt, config_json, keep=cfg.keep_checkpoints)
                vocabulary = vocabulary or _caption_tables(data)
                _export(cfg, ema or model, dit_cfg, out / "model", *vocabulary)  # so a run can be evaluated midway
            if stopping:
                break
    if stopping:
        barrier(d)
        if d.is_main:
            tqdm.write(f"stopped at step {done} of {cfg.steps}: checkpoint and {out / 'model'} saved; "
                       "the same command resumes")
        raise KeyboardInterrupt
    if d.is_main and start == cfg.steps:  # resumed a finished run: nothing trained, model/ as it was
        with contextlib.closing(data):
            _export(cfg, ema or model, dit_cfg, out / "model", *_caption_tables(data))
    return {"out_dir": str(out), "steps": cfg.steps, "resumed_from": start, "final_loss": loss_value,
            "world_size": d.world_size}


@torch.no_grad()
def cache_pool_latents(cfg: DiTTrainConfig, progress: bool = True) -> dict:
    """`kinema train latents`: encode one epoch of a world pool into cfg.latent_cache_dir, the clips
    rendered by data.workers processes, so that the training runs that follow (several at once on
    one GPU, or a run restarted with a new horizon) start with the first epoch's encoding done."""
    if not cfg.latent_cache_dir or not cfg.cache_latents:
        raise ValueError("kinema train latents fills latent_cache_dir: set it (and cache_latents = true)")
    if cfg.data.source != "world" or cfg.data.num_clips is None:
        raise ValueError("kinema train latents needs a fixed world pool (data.source = 'world', data.num_clips)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    d = Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    vae = CausalVideoVAE.from_pretrained(cfg.vae).to(d.device).eval().requires_grad_(False)
    cache = LatentCache(vae, cfg.latent_cache_dir)
    data = VideoBatches(cfg.data, cfg.batch_size)
    steps = math.ceil(len(data._pool) / cfg.batch_size)  # one epoch: every clip of the pool
    t0, encoded = time.perf_counter(), 0
    try:
        for step in tqdm(range(steps), desc="cache latents", unit="batch", disable=not progress):
            batch = data.batch(step, skip=cache.__contains__)
            encoded += len(batch["with_video"])
            _latents(vae, batch, cache, d)
    finally:
        data.close()
    return {"latent_cache": str(cache.dir), "clips": len(set(data._pool)), "encoded": encoded,
            "already_cached": cache.loaded, "seconds": round(time.perf_counter() - t0, 1)}


@torch.no_grad()
def _latents(vae, batch: dict, cache: LatentCache | None, d: Dist) -> torch.Tensor:
    """Normalised autoencoder latents of a batch (posterior mode), cached by clip key: only the
    samples that came with a video (not cached yet, or never cacheable) are encoded."""
    keys, fresh = batch["keys"], {}
    if batch["video"] is not None:
        z = vae.normalize(vae.encode(batch["video"].to(d.device)).mode())  # (n, C, T', H', W')
        for i, zi in zip(batch["with_video"], z):
            if cache is not None and keys[i] is not None:
                cache[keys[i]] = zi.cpu()
            else:
                fresh[i] = zi
    return torch.stack([fresh[i] if i in fresh else cache[k] for i, k in enumerate(keys)]).to(d.device)


class _Grounding(NamedTuple):
    """What the grounding loss needs beside the batch (kinema/train/grounding.py)."""
    maps: AttentionMaps  # records the cross-attention maps of a forward pass
    regions: SceneRegions  # where each object of a batch's clips is, on the token grid
    tokenizer: object  # the text encoder's, to find each object's words


def _tokenizer(encoder):
    """The tokenizer under a (possibly cached) text encoder."""
    while not hasattr(encoder, "tokenizer") and hasattr(encoder, "encoder"):
        encoder = encoder.encoder
    if not hasattr(encoder, "tokenizer"):
        raise ValueError(f"grounding needs the text encoder's tokenizer; {type(encoder).__name__} has none")
    return encoder.tokenizer


def _caption_tables(data) -> tuple[Counter, Counter]:
    """The training captions' (word counts, word-pair counts): what the prompt refiner reads."""
    return caption_tables(data.training_captions())


def _export(cfg: DiTTrainConfig, dit: torch.nn.Module, dit_cfg, folder: Path, words: Counter,
            pairs: Counter) -> None:
    """OUT/model: the pipeline folder of the weights just checkpointed (EMA if kept), with the
    training vocabulary its prompt refiner reads (`_caption_tables`: word and word-pair counts).
    Built aside and swapped in, so an eval reading it midway never sees a half-written folder."""
    from ..pipelines.pipeline import built_aside, save_pipeline_folder

    with built_aside(folder) as tmp:
        save_pipeline_folder(tmp, vae_dir=cfg.vae, dit=dit, dit_config=dit_cfg, text_encoder=cfg.text_encoder,
                             text_max_length=cfg.text_max_length, defaults=sampling_defaults(cfg),
                             vocabulary=words, vocabulary_source=vocabulary_source(cfg), pairs=pairs,
                             text_clause_attention=cfg.text_clause_attention)


def sampling_defaults(cfg: DiTTrainConfig, steps: int | None = None):
    """The generation defaults a run writes into its model (and samples its previews with, at
    `steps`): the first bucket's size, the config's guidance, sampling steps and sample_shift. The
    training-time shift (timestep_shift) is not a sampling default: it only moves the training times."""
    from ..pipelines.pipeline import PipelineDefaults

    f, h, w = cfg.data.buckets[0]
    return PipelineDefaults(num_frames=f, height=h, width=w, fps=cfg.data.fps,
                            num_inference_steps=cfg.sample_steps if steps is None else steps, guidance_scale=cfg.guidance_scale,
                            shift=cfg.sample_shift)


def vocabulary_source(cfg: DiTTrainConfig) -> str:
    d = cfg.data
    if d.source == "csv":
        return f"every caption of {d.csv}"
    pool = f"the {d.num_clips}-clip world pool" if d.num_clips is not None else "4,000 clips of the fresh world stream"
    held = ", held-out wording excluded" if d.hold_out_wording else ""
    return f"{pool} (data.seed {d.seed}, caption '{d.caption}'{held})"


def _previews(cfg, dit, vae, text_encoder, folder: Path, step: int) -> None:
    from ..data.video_io import write_video
    from ..pipelines.pipeline import KinemaPipeline

    pipe = KinemaPipeline(vae, dit.eval(), text_encoder, sampling_defaults(cfg, cfg.preview_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    frames = pipe(cfg.preview_prompts, generator=gen, progress=False, output_type="uint8").frames
    for i, video in enumerate(frames):
        write_video(folder / f"step_{step:07d}_{i}.mp4", video, fps=cfg.data.fps)
    dit.train()
