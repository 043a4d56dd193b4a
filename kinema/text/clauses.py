"""Clause-local attention for the text encoder: each clause of a caption is read on its own.

A two-object caption names two objects and two motions: "a red ball moving left while a blue
square spins". Encoded whole, every token's state mixes in the other clause's words, so the state
of "left" carries "square" and "spins" as much as "ball"; the DiT then has to recover which motion
belongs to which object from that mixture (docs/default-model.md: the motion binding index).
With `clause_attention` the encoder's self-attention is block-diagonal over clauses, as if each
clause were encoded alone (StructureDiffusion, Feng et al. 2023, encodes noun phrases
separately for the same reason), while the tokens keep their positions in the caption.

A clause starts at a conjunction or a semicolon/comma that is followed by a determiner:
", and a", " while one", "; the", " as an". "falling and bouncing", "up and down" and "on a gray
background" stay inside their clause. The special tokens ([CLS], [SEP]) are shared by all
clauses and read none of them, so a clause's states do not depend on any other clause's words.

    clause_spans("a red ball moving left while a blue square spins")
    # [(0, 23), (23, 48)]
"""
from __future__ import annotations

import re

import torch

_DETERMINER = r"(?=(?:a|an|one|the|another)\b)"
_CONJ = r"(?:and|while|as|whereas|but)"
_BOUNDARY = re.compile(rf"(?:\s*[;,]\s*(?:{_CONJ}\s+)?|\s+{_CONJ}\s+){_DETERMINER}", re.IGNORECASE)


def clause_spans(text: str) -> list[tuple[int, int]]:
    """The character spans (start, end) of a caption's clauses, in order; they tile the text."""
    cuts = [m.start() for m in _BOUNDARY.finditer(text) if m.start() > 0]
    bounds = [0, *cuts, len(text)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a] or [(0, len(text))]


def clause_attention_mask(texts: list[str], offsets: list[list[tuple[int, int]]],
                          special: list[list[int]], length: int) -> torch.Tensor:
    """(B, L, L) bool: query token i may attend to key token j.

    `offsets[b]` and `special[b]` are token b's character offsets and special-token flags (as the
    tokenizers library gives them), already truncated to the tokens kept, at most `length`.
    Content tokens attend within their clause and to the special tokens; special tokens attend only
    to each other, so they carry no clause's words into another (they stay attention sinks, as in
    a clause encoded alone). Padding keys are masked; padding queries see the special tokens only
    (all real tokens if there are none).
    """
    mask = torch.zeros(len(texts), length, length, dtype=torch.bool)
    for b, (text, offs, spec) in enumerate(zip(texts, offsets, special)):
        starts = [s for s, _ in clause_spans(text)]
        n = len(offs)
        seg = torch.full((length,), -2, dtype=torch.long)  # -2 padding, -1 special, k clause k
        for i, ((start, _), is_special) in enumerate(zip(offs, spec)):
            seg[i] = -1 if is_special else sum(s <= start for s in starts) - 1
        same = seg[:, None] == seg[None, :]
        real = torch.arange(length) < n
        is_spec = seg == -1
        allowed = (same | is_spec[None, :]) & real[None, :]
        allowed[n:] = (is_spec & real if is_spec.any() else real)[None, :]
        mask[b] = allowed
    return mask
