"""The default text encoder's network without transformers: a BERT encoder (all-MiniLM-L6-v2 is
one: 6 layers, width 384, 12 heads) in plain PyTorch, and its tokenizer through the `tokenizers`
library straight from tokenizer.json.

Why: importing transformers' BERT modelling code costs 3-5 s on this 2-core machine (it pulls in
torch.distributed.tensor and more), most of a `kinema generate`'s model load, for a network of
sixty lines. The weights are the package's own safetensors, loaded under transformers' names, so
the states equal transformers' BertModel.last_hidden_state to float rounding
(tests/test_text.py compares them on captions of every kind, and the token ids exactly).

    model = BertEncoder.from_folder(path)                 # config.json + model.safetensors
    tokenizer = FastTokenizer.from_folder(path)           # tokenizer.json (+ tokenizer_config.json)
    out = model(**tokenizer(texts, padding="max_length", truncation=True, max_length=40, return_tensors="pt"))
    out.last_hidden_state                                 # (B, L, 384)
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.loading import skip_init

BERT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
             "max_position_embeddings", "type_vocab_size", "layer_norm_eps")


class _Embeddings(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: Tensor, types: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.token_type_embeddings(types) + self.position_embeddings(pos)
        return self.LayerNorm(x)  # (B, L, D)


class _SelfAttention(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(c.hidden_size, c.hidden_size) for _ in range(3))
        self.heads = c.num_attention_heads

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, L, D = x.shape
        q, k, v = (f(x).view(B, L, self.heads, D // self.heads).transpose(1, 2) for f in (self.query, self.key, self.value))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # mask (B, 1, 1 or L, L): (B, h, L, d)
        return o.transpose(1, 2).reshape(B, L, D)


class _DenseNorm(nn.Module):
    """BERT's `output` blocks: dense, then LayerNorm of the residual sum."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _Layer(nn.Module):
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = _SelfAttention(c)
        self.attention.output = _DenseNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.output = _DenseNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.attention.output(self.attention.self(x, mask), x)
        return self.output(F.gelu(self.intermediate.dense(x)), x)  # exact (erf) GELU, BERT's "gelu"


class BertEncoder(nn.Module):
    """BertModel's encoder path (no pooler), under its state-dict names."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> SimpleNamespace:
        """attention_mask: (B, L) keys to attend to, or (B, L, L) query i may attend to key j
        (clause-local attention, text/clauses.py)."""
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        mask = mask[:, None, None, :] if mask.dim() == 2 else mask[:, None]  # (B, 1, 1 or L, L)
        x = self.embeddings(input_ids, torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return SimpleNamespace(last_hidden_state=x)

    def get_input_embeddings(self) -> nn.Embedding:  # as transformers' models name it
        return self.embeddings.word_embeddings

    @classmethod
    def from_folder(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> "BertEncoder":
        from safetensors.torch import load_file

        folder = Path(folder)
        raw = json.loads((folder / "config.json").read_text())
        if raw.get("model_type") != "bert" or raw.get("hidden_act", "gelu") != "gelu" \
                or raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{folder} is not a plain BERT encoder (model_type bert, gelu, absolute positions)")
        config = SimpleNamespace(**{k: raw[k] for k in BERT_KEYS})
        # built on the CPU, unfilled, then its tensors replaced by the file's: on the meta device the
        # first normal_ of an embedding costs ~2 s a process (torch 2.13 on an AVX2 CPU)
        with skip_init():
            model = cls(config)
        weights = {k.removeprefix("bert."): v for k, v in load_file(str(folder / "model.safetensors")).items()}
        wanted = model.state_dict().keys()
        missing = sorted(set(wanted) - set(weights))
        if missing:
            raise ValueError(f"{folder}/model.safetensors lacks {len(missing)} BERT tensor(s), e.g. {missing[:3]}")
        model.load_state_dict({k: weights[k].to(dtype) for k in wanted}, assign=True)
        return model.eval().requires_grad_(False)


class FastTokenizer:
    """The slice of a transformers tokenizer that HFTextEncoder calls, over `tokenizers.Tokenizer`:
    `tok(texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")` and
    `tok(texts, truncation=False)["input_ids"]`, padded on the right with [PAD]."""

    padding_side = "right"

    def __init__(self, tokenizer, pad_token: str = "[PAD]", unk_token: str = "[UNK]"):
        self.backend = tokenizer
        self.pad_token, self.unk_token, self.eos_token = pad_token, unk_token, None
        self.pad_token_id = tokenizer.token_to_id(pad_token)
        self.backend.no_padding()
        self.backend.no_truncation()

    @classmethod
    def from_folder(cls, folder: str | Path) -> "FastTokenizer":
        from tokenizers import Tokenizer

        folder = Path(folder)
        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")),
                   pad_token=cfg.get("pad_token", "[PAD]"), unk_token=cfg.get("unk_token", "[UNK]"))

    def __call__(self, texts: list[str], padding: bool | str = False, truncation: bool = False,
                 max_length: int | None = None, return_tensors: str | None = None) -> dict:
        encodings = self.backend.encode_batch(list(texts))
        ids = [e.ids for e in encodings]
        if truncation and max_length is not None:
            ids = [row if len(row) <= max_length else row[:max_length - 1] + row[-1:] for row in ids]  # keep [SEP]
        width = max_length if padding == "max_length" else max((len(r) for r in ids), default=0) if padding else None
        masks = [[1] * len(r) for r in ids]
        if width is not None:
            masks = [m + [0] * (width - len(m)) for m in masks]
            ids = [r + [self.pad_token_id] * (width - len(r)) for r in ids]
        out = {"input_ids": ids, "attention_mask": masks, "token_type_ids": [[0] * len(r) for r in ids]}
        if return_tensors == "pt":
            out = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        return out

    def offsets(self, texts: list[str], max_length: int) -> tuple[list[list[tuple[int, int]]], list[list[int]]]:
        """Each kept token's character offsets and special-token flag, truncated as __call__ truncates."""
        offsets, special = [], []
        for e in self.backend.encode_batch(list(texts)):
            offs, spec = list(e.offsets), list(e.special_tokens_mask)
            if len(offs) > max_length:
                offs, spec = offs[:max_length - 1] + offs[-1:], spec[:max_length - 1] + spec[-1:]
            offsets.append(offs)
            special.append(spec)
        return offsets, special
