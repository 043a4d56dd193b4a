"""A caption-embedding cache: encode each caption once, reuse it for every epoch and run.

    enc = CachedTextEncoder(load_text_encoder("minilm"), "cache/text")
    states, mask = enc.encode(captions)   # misses are encoded in one batch and stored
    enc.fill(all_captions)                # or precompute a whole data set up front

One safetensors file per caption, at <cache_dir>/<key[:2]>/<key>.safetensors, with
key = sha256([encoder.name, max_length, text]). The file holds `states` (L, dim) float32 and
`mask` (L,) bool, raw bytes, so a hit is bit-identical to what was computed; its metadata repeats
the name, max_length and text, and a file that does not match or does not load is recomputed.
Writes go to a temp file and `os.replace`, so a killed run or two ranks writing the same caption
never leave a half-written entry. A small in-memory LRU sits in front of the disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .encoders import TextEncoder, check_texts

FORMAT = "kinema-text-cache-1"
Entry = tuple[torch.Tensor, torch.Tensor]  # states (L, dim) float32, mask (L,) bool, on the CPU


class CachedTextEncoder(TextEncoder):
    """Wraps any TextEncoder; same interface, same outputs, each caption computed once."""

    def __init__(self, encoder: TextEncoder, cache_dir: str | os.PathLike, memory_items: int = 4096):
        self.encoder = encoder
        self.name, self.dim, self.max_length = encoder.name, encoder.dim, encoder.max_length
        self.spec = getattr(encoder, "spec", None)
        self.device = getattr(encoder, "device", torch.device("cpu"))
        self.cache_dir = Path(cache_dir)
        self.memory_items = memory_items
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self.hits = self.misses = 0  # per caption, counted once per distinct caption per call

    def key(self, text: str) -> str:
        # JSON keeps the fields apart: no name/text pair can spell another's key.
        return hashlib.sha256(json.dumps([self.name, self.max_length, text]).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.safetensors"

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = check_texts(texts)
        if not texts:
            return self.encoder.encode([])
        entries = self._lookup(texts)
        keys = [self.key(t) for t in texts]
        states = torch.stack([entries[k][0] for k in keys])  # (B, L, dim)
        mask = torch.stack([entries[k][1] for k in keys])  # (B, L)
        return states.to(self.device), mask.to(self.device)

    def fill(self, texts: list[str], batch_size: int = 256) -> int:
        """Precompute captions into the cache without returning them; returns how many were new."""
        texts = list(dict.fromkeys(check_texts(texts)))
        before = self.misses
        for i in range(0, len(texts), batch_size):
            self._lookup(texts[i:i + batch_size])
        return self.misses - before

    def _lookup(self, texts: list[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        missing: dict[str, str] = {}  # key -> text, each distinct caption once
        for text in texts:
            key = self.key(text)
            if key in found or key in missing:
                continue
            entry = self._memory_get(key)
            if entry is None:
                entry = self._load(key, text)
                if entry is not None:
                    self._memory_put(key, entry)
            if entry is None:
                missing[key] = text
            else:
                found[key] = entry
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            states, mask = self.encoder.encode(list(missing.values()))  # one batch for all misses
            states, mask = states.float().cpu(), mask.bool().cpu()
            for i, (key, text) in enumerate(missing.items()):
                entry = (states[i].clone(), mask[i].clone())  # own storage: files and LRU hold one row
                self._store(key, text, entry)
                self._memory_put(key, entry)
                found[key] = entry
        return found

    def _memory_get(self, key: str) -> Entry | None:
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
        return entry

    def _memory_put(self, key: str, entry: Entry) -> None:
        if self.memory_items <= 0:
            return
        self._memory[key] = entry
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def _metadata(self, text: str) -> dict[str, str]:
        return {"format": FORMAT, "encoder": self.name, "max_length": str(self.max_length), "text": text}

    def _load(self, key: str, text: str) -> Entry | None:
        """The stored entry, or None when absent, unreadable or not this caption's (then recomputed)."""
        tensors = load_file_checked(self.path(key), self._metadata(text))
        if tensors is None:
            return None
        states, mask = tensors.get("states"), tensors.get("mask")
        if (states is None or mask is None
                or states.shape != (self.max_length, self.dim) or states.dtype != torch.float32
                or mask.shape != (self.max_length,) or mask.dtype != torch.bool):
            return None
        return states, mask

    def _store(self, key: str, text: str, entry: Entry) -> None:
        save_file_atomic({"states": entry[0], "mask": entry[1]}, self.path(key), self._metadata(text))


def load_file_checked(path: Path, metadata: dict[str, str]) -> dict[str, torch.Tensor] | None:
    """The tensors of a safetensors file written with exactly `metadata`; None when it is absent,
    unreadable or another entry's (a cache then recomputes it)."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (OSError, ValueError, SafetensorError):
        return None
    return tensors if meta == metadata else None


def save_file_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors to a temp file beside `path`, then `os.replace`: readers (other ranks, a
    killed run's successor) see the old file or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
