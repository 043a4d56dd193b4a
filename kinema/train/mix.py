"""Latents with captions mixed into a DiT run's batches (`mix_latents`, `mix_share`).

The folder holds `latents.safetensors` ({"latents": (n, C, T', h, w)}, normalised as the DiT sees
them) and `samples.json` ({"captions": [n strings], ...}), as `scripts/raft.py collect` writes them:
the model's own videos that the world's judge passed (reward-ranked fine-tuning). Which samples of
a batch are replaced, and by which latent, is drawn per (seed, step, global sample), so a resumed
or multi-process run mixes the same way as one process.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def _draw(seed: int, step: int, g: int) -> tuple[float, int]:
    """(u in [0, 1), a 62-bit integer) for global sample g at `step`."""
    h = hashlib.blake2b(f"mix:{seed}:{step}:{g}".encode(), digest_size=16).digest()
    return int.from_bytes(h[:8], "little") / 2 ** 64, int.from_bytes(h[8:], "little") >> 2


class MixedLatents:
    def __init__(self, folder: str | Path, share: float):
        folder = Path(folder)
        if not (folder / "latents.safetensors").is_file() or not (folder / "samples.json").is_file():
            raise FileNotFoundError(f"mix_latents {folder}: needs latents.safetensors and samples.json "
                                    "(scripts/raft.py collect writes them)")
        self.latents = load_file(str(folder / "latents.safetensors"))["latents"].float()  # (n, C, T', h, w)
        self.captions = json.loads((folder / "samples.json").read_text())["captions"]
        if len(self.captions) != len(self.latents) or not len(self.captions):
            raise ValueError(f"mix_latents {folder}: {len(self.latents)} latents, {len(self.captions)} captions "
                             "(must be equal and not zero)")
        self.share = share

    def __len__(self) -> int:
        return len(self.captions)

    def apply(self, seed: int, step: int, index: list[int], x0: torch.Tensor, texts: list[str]
              ) -> tuple[torch.Tensor, list[str], int]:
        """x0 (b, C, T', h, w) and its captions with each sample replaced, with probability `share`,
        by a mixed latent and its caption; also the count replaced."""
        if x0.shape[1:] != self.latents.shape[1:]:
            raise ValueError(f"mix_latents hold latents of shape {tuple(self.latents.shape[1:])}, the "
                             f"data's are {tuple(x0.shape[1:])}")
        x0, texts, n = x0.clone(), list(texts), 0
        for row, g in enumerate(index):
            u, k = _draw(seed, step, g)
            if u < self.share:
                j = k % len(self)
                x0[row], texts[row], n = self.latents[j].to(x0.device, x0.dtype), self.captions[j], n + 1
        return x0, texts, n
