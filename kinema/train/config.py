"""The DiT training config: a preset name for the model, then short overrides.

    preset = "dit-t"          # kinema.models.dit.PRESETS
    vae = "runs/vae-f8t4"     # a trained autoencoder folder
    steps = 2000
    [dit]                     # any DiTConfig field, over the preset
    depth = 4
    [data]
    buckets = [[17, 64, 64]]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .. import flow
from ..config import ConfigError, apply_overrides, from_dict, merge, read_toml
from ..data.loader import DataConfig
from ..models.dit import PRESETS, DiTConfig
from .optim import OptimConfig


@dataclass
class DiTTrainConfig:
    preset: str = "dit-t"
    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: str = "runs/vae-f8t4"
    init_from: str | None = None  # a trained model folder whose DiT starts this run (depth may grow: train/grow.py)
    init_trunk_only: bool = False  # init_from carries the trunk only: patch embedding and output layer start fresh
    text_encoder: str = "minilm"  # "minilm" or a local Hugging Face folder
    text_max_length: int = 32
    text_clause_attention: bool = False  # each clause of a caption read on its own (text/clauses.py; minilm)
    text_cache_dir: str | None = None  # also keep caption embeddings on disk, across runs
    text_cache_items: int = 8192  # captions kept in memory (LRU); >= 2 x data.num_clips keeps a pool's all
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 16  # global, over all ranks
    steps: int = 1000
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema_decay: float = 0.999  # 0 turns EMA off
    precision: Literal["fp32", "bf16"] = "fp32"
    caption_dropout: float = 0.1  # trains the unconditional branch for classifier-free guidance
    # training times: logit-normal, then shifted by this (> 1: more at high noise); None: from the token
    # count (SD3 / Open-Sora 2.0)
    timestep_shift: float | None = None
    # [lo, hi]: training times drawn from that distribution truncated to lo <= t <= hi, for a noise-level
    # expert (kinema export --high-noise-expert; docs/default-model.md); None: all of [0, 1]
    time_range: list[float] | None = None
    sample_shift: float | None = None  # the exported model's sampling shift (and the previews'); None: token count
    cache_latents: bool = True  # keep each clip's latent after its first encode (fixed pools)
    latent_cache_dir: str | None = None  # also keep them on disk, across resumes and runs (train/latent_cache.py)
    log_every: int = 10
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    preview_every: int = 0  # 0: no preview videos
    preview_prompts: list[str] = field(default_factory=lambda: ["a small red circle moving right on a gray background"])
    preview_steps: int = 20
    guidance_scale: float = 4.0  # written into the exported model's defaults
    sample_steps: int = 30
    out_dir: str = "runs/dit"
    seed: int = 0
    threads: int | None = None  # torch threads per process; None leaves torch's default
    # latents with captions mixed into every batch (a folder of latents.safetensors + samples.json, as
    # scripts/raft.py collect writes: the model's own videos that the judge passed); None = data only
    mix_latents: str | None = None
    mix_share: float = 0.5  # each sample is drawn from mix_latents with this probability (0: none, not read)
    # weight of the grounded cross-attention loss (train/grounding.py): each world object's caption
    # words read where the object is; 0 = off. Needs world data and cross-attention conditioning
    grounding_weight: float = 0.0
    # the flow loss on the latent cells a world object covers (train/grounding.py's scene_regions on the
    # latent grid) weighted 1 + this, the background's 1; 0 = the plain loss. Needs world data
    object_loss_weight: float = 0.0

    def __post_init__(self):
        if self.time_range is not None:
            try:
                self.time_range = list(flow.check_time_range(self.time_range))
            except ValueError as e:
                raise ConfigError(f"time_range: {e}") from None
        if not 0.0 <= self.mix_share <= 1.0:
            raise ConfigError(f"mix_share must be in [0, 1], got {self.mix_share}")
        for name in ("grounding_weight", "object_loss_weight"):
            self._check_scene_loss(name)
        if self.grounding_weight > 0:
            if self.dit.conditioning != "cross":
                raise ConfigError("grounding_weight > 0 needs dit.conditioning = 'cross' (it grounds cross-attention)")
            if self.dit.patch_size[0] != 1:
                raise ConfigError(f"grounding_weight > 0 needs a temporal patch of 1, got {self.dit.patch_size}")

    def _check_scene_loss(self, name: str) -> None:
        """The weight `name` of a loss that reads each world clip's scene: >= 0, and when on, world
        data and no mixed latents (which have no scene)."""
        weight = getattr(self, name)
        if weight < 0:
            raise ConfigError(f"{name} must be >= 0, got {weight}")
        if weight > 0 and self.data.source != "world":
            raise ConfigError(f"{name} > 0 needs data.source = 'world' (its scenes say where objects are)")
        if weight > 0 and self.mix_latents and self.mix_share > 0:
            raise ConfigError(f"{name} > 0 cannot be combined with mix_latents: mixed samples have no scene")

def load_dit_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DiTTrainConfig:
    """file <- overrides, on top of the named preset's DiTConfig."""
    data = apply_overrides(read_toml(path) if path is not None else {}, overrides or [])
    preset = data.get("preset", DiTTrainConfig.preset)
    if preset not in PRESETS:
        raise ConfigError(f"unknown DiT preset {preset!r}; presets: {sorted(PRESETS)}")
    data["dit"] = merge(dict(PRESETS[preset]), data.get("dit", {}))
    return from_dict(DiTTrainConfig, data)
