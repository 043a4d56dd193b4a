"""Grounded cross-attention (`grounding_weight`): each object's words should be read where it is.

The flow loss says little about which object a caption's words belong to: swapping two objects'
motions in the caption costs the shipped model ~12 % of its loss (docs/default-model.md, "Does the
denoiser bind?"). The shapes world knows exactly where every object is in every frame, and the
world's parser knows which words describe which object. TokenCompose (Wang et al. 2024) adds that
knowledge to text-to-image training as a loss on the cross-attention maps; this is its token loss
on spacetime tokens:

    A (B, N, L)    cross-attention probabilities, mean over heads and blocks (video token n reads word l)
    R_k (B, N)     1 where object k covers part of token n's cell in that token's latent frame
    W_k (B, L)     1 on the caption tokens of object k's words (size, colour, shape, motion, speed)
    f_kl = sum_n A[n, l] R_k[n] / sum_n A[n, l]      the share of word l's reading inside object k
    loss = mean over (b, k, l in W_k) of (1 - t_b) (1 - f_kl)^2

(1 - t): at pure noise (t = 1) the latent holds no layout to attend to. Samples without a world
scene (a CSV's videos, a dropped caption) contribute nothing.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..data.loader import world_spin
from ..world import sample_scene
from ..world.scene import respin
from ..world.parse import PromptError, object_word_spans
from ..world.render import coverage

MIN_SHARE = 0.05  # a cell belongs to an object's region when it holds this share of the object's area


def token_offsets(tokenizer, texts: list[str]) -> list[list[tuple[int, int]]]:
    """(start, end) character span of every token of each text, special tokens (0, 0)."""
    backend = getattr(tokenizer, "backend", None)  # kinema.text.bert.FastTokenizer
    if backend is not None:
        return [list(e.offsets) for e in backend.encode_batch(list(texts))]
    try:  # a transformers fast tokenizer
        return [list(map(tuple, o)) for o in tokenizer(list(texts), return_offsets_mapping=True)["offset_mapping"]]
    except (NotImplementedError, TypeError, KeyError) as e:
        raise ValueError(f"grounding needs a tokenizer that reports character offsets; {type(tokenizer).__name__} "
                         "does not") from e


def object_token_masks(tokenizer, texts: list[str], length: int, objects: int = 2) -> Tensor:
    """(B, objects, length) bool: the caption tokens that describe object k (the parser's order).
    A caption the world's parser cannot read, or an empty one, has none. Truncation keeps the
    first length - 1 tokens, as the encoder does."""
    out = torch.zeros(len(texts), objects, length, dtype=torch.bool)
    for b, (text, offsets) in enumerate(zip(texts, token_offsets(tokenizer, texts))):
        if not text.strip():
            continue
        try:
            words = object_word_spans(text)
        except PromptError:
            continue
        for k, spans in enumerate(words[:objects]):
            for j, (s, e) in enumerate(offsets[:length - 1]):
                if e > s and any(s < we and ws < e for ws, we in spans):
                    out[b, k, j] = True
    return out


def latent_frames(num_frames: int, temporal_stride: int) -> list[list[int]]:
    """The video frames each latent frame of a causal autoencoder encodes: [0], [1..s], [s+1..2s], ..."""
    frames = [[0]]
    for start in range(1, num_frames, temporal_stride):
        frames.append(list(range(start, min(start + temporal_stride, num_frames))))
    return frames


def scene_regions(scene, grid: tuple[int, int, int], temporal_stride: int, objects: int = 2) -> Tensor:
    """(objects, N) float: 1 on the tokens of the (T', H', W') grid whose cell holds at least
    MIN_SHARE of object k's area in one of the frames its latent frame encodes (row-major, as
    patchify orders tokens). Zero rows for objects the scene lacks."""
    gt, gh, gw = grid
    W, H = scene.width, scene.height
    if H % gh or W % gw:
        raise ValueError(f"a {W}x{H} frame does not split into the grid's {gh}x{gw} cells")
    out = torch.zeros(objects, gt, gh, gw)
    groups = latent_frames(scene.num_frames, temporal_stride)
    if len(groups) != gt:
        raise ValueError(f"{scene.num_frames} frames make {len(groups)} latent frames, the grid has {gt}")
    frame = np.zeros((H, W))
    for k, track in enumerate(scene.objects[:objects]):
        for lt, frames in enumerate(groups):
            for t in frames:
                (rows, cols), cov = coverage(track, t, W, H, ss=2)
                total = float(cov.sum())
                if total <= 0:
                    continue
                frame[:] = 0
                frame[rows, cols] = cov
                cells = frame.reshape(gh, H // gh, gw, W // gw).sum(axis=(1, 3))  # (gh, gw) area in each cell
                out[k, lt] += torch.from_numpy(cells >= MIN_SHARE * total)
    return out.clamp_(max=1).reshape(objects, -1)


class SceneRegions:
    """regions(batch, latent_thw) -> (B, objects, N): scene_regions of each sample of a
    VideoBatches batch, from its world seed (a pool clip's key holds it; a fresh world stream's is
    clip_seed(data.seed, g)). A pool's are kept per (seed, grid): it repeats its clips every epoch."""

    def __init__(self, data, temporal_stride: int, patch: tuple[int, int, int], objects: int = 2):
        self.data, self.stride, self.patch, self.objects = data, temporal_stride, patch, objects
        self.spin = world_spin(data) if data.source == "world" else None
        self.store: dict[tuple, Tensor] = {}

    def seeds(self, batch: dict) -> list[int | None]:
        from ..data.synth import clip_seed

        if self.data.source != "world":
            return [None] * len(batch["index"])
        if self.data.num_clips is None:  # a fresh stream: sample g is clip g
            return [clip_seed(self.data.seed, g) for g in batch["index"]]
        return [k[1] if k is not None and k[0] == "world" else None for k in batch["keys"]]

    def __call__(self, batch: dict, latent_thw: tuple[int, int, int]) -> Tensor:
        grid = tuple(s // p for s, p in zip(latent_thw, self.patch))
        f, h, w = batch["bucket"]
        rows = []
        for seed in self.seeds(batch):
            if seed is None:
                rows.append(torch.zeros(self.objects, math.prod(grid)))
                continue
            key = (seed, f, h, w, grid)
            regions = self.store.get(key)
            if regions is None:
                scene = sample_scene(seed, w, h, f, self.data.fps)
                if self.spin is not None:  # the spins the loader renders (data.spin_degrees, spin_direction)
                    scene = respin(scene, *self.spin)
                regions = scene_regions(scene, grid, self.stride, self.objects)
                if self.data.num_clips is not None:  # a fresh stream never repeats a clip: keep nothing
                    self.store[key] = regions
            rows.append(regions)
        return torch.stack(rows)


def word_shares(maps: list[Tensor], regions: Tensor) -> Tensor:
    """(B, objects, L): f_kl, the share of word l's attention (mean of the maps (B, heads, N, L)
    over heads and blocks) that falls inside object k's region."""
    a = torch.stack([m.float().mean(1) for m in maps]).mean(0)  # (B, N, L)
    inside = torch.einsum("bnl,bkn->bkl", a, regions.to(a))  # (B, K, L)
    return inside / a.sum(1).unsqueeze(1).clamp_min(1e-12)


def grounding_loss(maps: list[Tensor], words: Tensor, regions: Tensor, t: Tensor) -> Tensor:
    """The module docstring's loss; zero (with a graph) when no sample has a grounded word."""
    valid = (words & (regions.sum(-1, keepdim=True) > 0)).to(regions.device)  # (B, K, L)
    share = word_shares(maps, regions)
    w = (1 - t.float()).view(-1, 1, 1) * valid
    return ((1 - share) ** 2 * w).sum() / valid.sum().clamp_min(1)


class AttentionMaps:
    """with AttentionMaps(dit) as maps: ... — every cross-attention block of the DiT keeps its
    probabilities (B, heads, N, L) for the forward passes inside, in maps.list (cleared on entry)."""

    def __init__(self, dit: torch.nn.Module):
        self.modules = [b.cross for b in getattr(dit, "blocks", []) if hasattr(b, "cross")]
        if not self.modules:
            raise ValueError("grounding needs a DiT with cross-attention blocks (conditioning = 'cross')")
        self.list: list[Tensor] = []

    def __enter__(self) -> "AttentionMaps":
        self.list.clear()
        for m in self.modules:
            m.keep_maps = self.list
        return self

    def __exit__(self, *exc) -> None:
        for m in self.modules:
            m.keep_maps = None
