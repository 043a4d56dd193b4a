"""Clip latents kept after their first encode: a fixed pool (world `num_clips`, or a CSV data set)
runs its autoencoder once per clip, not once per epoch.

    cache = LatentCache(vae, folder="cache/latents")   # folder=None: in memory only
    if key in cache: z = cache[key]                     # (C, T', H', W'), normalised
    else: cache[key] = z

In memory always; with a folder also on disk, so a resumed run or the next run over the same pool
(the default recipe's stages 2a-2c share one) skips its first epoch's encoding, which is most of
that epoch's time. Files live at <folder>/<fingerprint>/<h[:2]>/<h>.safetensors, where the
fingerprint hashes the autoencoder's non-default config fields and encoder weights (another autoencoder, or another
training of this one, never reads these latents) and h = sha256 of the clip key. Each file holds
`latent` and repeats the key in its metadata; a file that does not match or load is re-encoded.
Writes go to a temp file and `os.replace` (kinema.text.cache.save_file_atomic).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..config import to_dict
from ..text.cache import load_file_checked, save_file_atomic

FORMAT = "kinema-latent-cache-1"


def config_identity(cfg) -> dict:
    """The fields of a config that differ from its class's defaults. A field added later with a
    default that keeps the old behaviour (the VAE's `shortcut = "none"`) leaves this unchanged, so
    caches written before it stay valid; a default that changes puts the field in (or takes it out),
    so those caches are rebuilt."""
    values, defaults = to_dict(cfg), to_dict(type(cfg)())
    return {k: v for k, v in values.items() if v != defaults.get(k)}


def encoder_fingerprint(vae) -> str:
    """16 hex digits naming what `vae.normalize(vae.encode(x).mode())` computes: the autoencoder's
    non-default config fields (incl. scaling and shift) and its encoder weights."""
    h = hashlib.sha256(json.dumps(config_identity(vae.config), sort_keys=True).encode())
    for name, tensor in sorted(vae.encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class LatentCache:
    def __init__(self, vae=None, folder: str | os.PathLike | None = None):
        if folder is not None and vae is None:
            raise ValueError("a latent cache on disk needs the autoencoder, to fingerprint it")
        self.memory: dict[tuple, torch.Tensor] = {}
        self.dir = None if folder is None else Path(folder) / encoder_fingerprint(vae)
        self.loaded = 0  # latents read from disk

    def __contains__(self, key: tuple) -> bool:
        if key in self.memory:
            return True
        if self.dir is None:
            return False
        z = self._load(key)
        if z is None:
            return False
        self.memory[key] = z
        self.loaded += 1
        return True

    def __getitem__(self, key: tuple) -> torch.Tensor:
        if key not in self:
            raise KeyError(key)
        return self.memory[key]

    def __setitem__(self, key: tuple, z: torch.Tensor) -> None:
        z = z.detach().cpu().contiguous()
        self.memory[key] = z
        if self.dir is not None:
            self._store(key, z)

    def stored(self) -> Iterator[tuple[tuple, torch.Tensor]]:
        """Every (key, latent) on disk, in path order, not kept in memory: a pool's latents for
        another model to learn from (scripts/train_verifier.py reader). A file that a lookup of its
        own key would not load (another format, another path, unreadable) is skipped."""
        if self.dir is None:
            return
        for path in sorted(self.dir.glob("*/*.safetensors")):
            try:
                with safe_open(path, framework="pt") as f:
                    key = tuple(json.loads((f.metadata() or {})["key"]))
            except (OSError, ValueError, KeyError, TypeError, SafetensorError):
                continue
            z = self._load(key) if self.path(key) == path else None
            if z is not None:
                yield key, z

    @staticmethod
    def _key_text(key: tuple) -> str:
        return json.dumps(list(key))

    def path(self, key: tuple) -> Path:
        h = hashlib.sha256(self._key_text(key).encode()).hexdigest()
        return self.dir / h[:2] / f"{h}.safetensors"

    def _metadata(self, key: tuple) -> dict[str, str]:
        return {"format": FORMAT, "key": self._key_text(key)}

    def _load(self, key: tuple) -> torch.Tensor | None:
        tensors = load_file_checked(self.path(key), self._metadata(key))
        return None if tensors is None else tensors.get("latent")

    def _store(self, key: tuple, z: torch.Tensor) -> None:
        save_file_atomic({"latent": z}, self.path(key), self._metadata(key))
