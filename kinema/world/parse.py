"""Read a prompt in the shapes-world vocabulary into what it claims.

Words are matched longest-phrase-first against a table built from `vocab`, then grouped into
objects: size and colour (and a motion used as an adjective: "a spinning red square") before a
shape noun belong to it; motion words after a shape belong to the last shape. A word outside
the vocabulary, or a claim the world cannot hold (a gray object, a blue background, a spinning
circle, three objects), is a PromptError that says which words and why.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import vocab


class PromptError(ValueError):
    """A prompt the shapes world cannot read; `unknown_words` lists out-of-vocabulary words."""

    def __init__(self, message: str, unknown_words: list[str] | None = None):
        super().__init__(message)
        self.unknown_words = unknown_words or []


@dataclass
class ObjectClaim:
    shape: str
    colour: str | None = None
    size: str | None = None
    motion: str | None = None
    speed: str | None = None

    def attributes(self) -> dict[str, str]:
        """The attributes this prompt names for the object (what the judge will check)."""
        named = {"colour": self.colour, "shape": self.shape, "size": self.size, "motion": self.motion}
        return {k: v for k, v in named.items() if v is not None}


@dataclass
class PromptClaims:
    text: str
    objects: list[ObjectClaim]
    background: str | None = None


@dataclass
class _Pending:
    colour: str | None = None
    size: str | None = None
    parts: list[tuple[str, str, str]] = field(default_factory=list)

    def empty(self) -> bool:
        return self.colour is None and self.size is None and not self.parts


def _words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The prompt's lower-case words and the (start, end) character span of each in `text`."""
    low = re.sub(r"[^a-z0-9']", " ", text.lower())  # one character for one: spans stay put
    if len(low) != len(text):  # a character whose lower case is longer (rare); spans approximate
        low = low[:len(text)].ljust(len(text))
    found = list(re.finditer(r"\S+", low))
    return [m.group() for m in found], [m.span() for m in found]


def _normalise(text: str) -> list[str]:
    return _words(text)[0]


def _phrase_table() -> dict[tuple[str, ...], tuple[str, str]]:
    table: dict[tuple[str, ...], tuple[str, str]] = {}

    def add(phrase: str, tag: str, value: str = "") -> None:
        table[tuple(_normalise(phrase))] = (tag, value)

    for w in vocab.FILLER_WORDS | {"place"}:
        add(w, "FILL")
    for w in vocab.BACKGROUND_PREPOSITIONS:
        add(w, "FILL")
    for w in vocab.JOINERS:
        add(w, "JOIN")
    for w in vocab.DETERMINERS:
        add(w, "DET")
    for w in vocab.BACKGROUND_NOUNS:
        add(w, "BGNOUN")
    for canon, words in vocab.SIZE_WORDS.items():
        for w in words:
            add(w, "SIZE", canon)
    for canon in vocab.OBJECT_COLOURS:
        add(canon, "COLOUR", canon)
    for canon, words in vocab.BACKGROUND_WORDS.items():
        for w in words:
            add(w, "BGCOLOUR", canon)
    for canon, words in vocab.SHAPE_WORDS.items():
        for w in words:
            add(w, "SHAPE", canon)
    for canon, words in vocab.SPEED_WORDS.items():
        for w in words:
            add(w, "SPEED", canon)
    for verbs in vocab.MOVE_VERBS:
        for w in verbs:
            add(w, "VERB")
    add("diagonally", "DIAG")
    for canon, phrases in vocab.DIRECTION_PHRASES.items():
        for p in phrases:
            add(p, "DIR", canon)
    for canon, verbs in vocab.DIRECTED_VERBS.items():
        for pair in verbs:
            for w in pair:
                add(w, "DIR", canon)
    for canon, verbs in vocab.MOTION_PHRASES.items():
        for pair in verbs:
            for w in pair:
                add(w, "MOTION", canon)
    for canon, phrases in vocab.PARSER_ONLY_MOTION_WORDS.items():
        for p in phrases:
            add(p, "DIR" if canon in vocab.DIRECTIONS else "MOTION", canon)
    return table


_TABLE = _phrase_table()
_MAX_PHRASE = max(len(k) for k in _TABLE)
BACKGROUND_LIST = ", ".join(vocab.BACKGROUNDS)
COLOUR_LIST = ", ".join(vocab.OBJECT_COLOURS)


def _tag(text: str, spans: list[tuple[int, int]] | None = None) -> list[tuple[str, str, str]]:
    """(tag, canonical value, surface words) of each phrase, longest first; `spans`, if given,
    receives each phrase's character span in `text`."""
    tokens, where = _words(text)
    tags, unknown, i = [], [], 0
    while i < len(tokens):
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):
            hit = _TABLE.get(tuple(tokens[i:i + n]))
            if hit:
                tags.append((hit[0], hit[1], " ".join(tokens[i:i + n])))
                if spans is not None:
                    spans.append((where[i][0], where[i + n - 1][1]))
                i += n
                break
        else:
            unknown.append(tokens[i])
            i += 1
    if unknown:
        words = ", ".join(f"'{w}'" for w in dict.fromkeys(unknown))
        raise PromptError(
            f"words outside the shapes-world vocabulary ({vocab.SPEC_VERSION}): {words}. Use colours "
            f"({COLOUR_LIST}), shapes ({', '.join(w for ws in vocab.SHAPE_WORDS.values() for w in ws)}), "
            f"sizes, motions and a {BACKGROUND_LIST} background; see docs/shapes-world.md.",
            unknown_words=list(dict.fromkeys(unknown)))
    return tags


def _motion(parts: list[tuple[str, str, str]], where: str) -> tuple[str | None, str | None]:
    """(motion, speed) from the motion words attached to one object."""
    motions = {v for t, v, _ in parts if t in ("MOTION", "DIR")}
    speeds = {v for t, v, _ in parts if t == "SPEED"}
    words = " / ".join(s for _, _, s in parts)
    if len(motions) > 1:
        raise PromptError(f"{where} has more than one motion ({words}); each object has exactly one.")
    if len(speeds) > 1:
        raise PromptError(f"{where} has two speeds ({words}).")
    motion = next(iter(motions), None)
    if motion is None and parts:
        raise PromptError(f"'{words}' for {where} needs a direction: left, right, up, down, or "
                          "diagonally up-right / up-left / down-right / down-left.")
    if any(t == "DIAG" for t, _, _ in parts) and motion not in vocab.DIAGONAL_MOTIONS:
        raise PromptError(f"'diagonally' for {where} needs two directions, e.g. 'diagonally up-right'.")
    speed = next(iter(speeds), None)
    if speed and motion not in vocab.LINEAR_MOTIONS:
        raise PromptError(f"a speed word qualifies only moving motions; {where} is {motion}.")
    return motion, speed


def parse_prompt(text: str) -> PromptClaims:
    """Parse a prompt into the objects and background it claims; raise PromptError if it can't."""
    return _read(text)[0]


def object_word_spans(text: str) -> list[list[tuple[int, int]]]:
    """For each object the prompt claims, in order, the character spans of the words that
    describe it (size, colour, shape, motion, speed; not determiners, joiners or the background).
    Raises PromptError as parse_prompt does."""
    _, owned, spans, _ = _read(text)
    return [[spans[i] for i in tags] for tags in owned]


def swap_objects(text: str) -> str | None:
    """The prompt with its two objects' noun phrases exchanged (size, colour and shape words and
    what lies between them), each motion left where it is, so each object gets the other's:
    "a red ball moving left while a blue square spins" -> "a blue square moving left while a red
    ball spins". An "a"/"an" before a phrase is made to fit its new first word. None unless the
    prompt reads as two objects (binding guidance, kinema/pipelines/pipeline.py)."""
    try:
        _, owned, spans, tags = _read(text)
    except PromptError:
        return None
    if len(owned) != 2:
        return None
    phrases = []
    for idx in owned:
        shape = next(i for i in idx if tags[i][0] == "SHAPE")
        phrases.append((spans[min(i for i in idx if i <= shape)][0], spans[shape][1]))
    (a0, a1), (b0, b1) = sorted(phrases)
    parts = [text[:a0], text[b0:b1], text[a1:b0], text[a0:a1], text[b1:]]
    for k in (0, 2):  # the text before each new phrase may end in its article
        m = re.search(r"\b(an?)(\s+)$", parts[k], re.IGNORECASE)
        if m:
            fit = vocab.article(parts[k + 1].lower())
            fit = fit.capitalize() if m.group(1)[0].isupper() else fit
            parts[k] = parts[k][:m.start(1)] + fit + m.group(2)
    return "".join(parts)


def _read(text: str) -> tuple[PromptClaims, list[list[int]], list[tuple[int, int]], list[tuple[str, str, str]]]:
    """parse_prompt's claims, the indices of each object's tags, every tag's character span, and
    the tags themselves (kind, value, surface)."""
    if not text or not text.strip():
        raise PromptError("the prompt is empty.")
    spans: list[tuple[int, int]] = []
    tags = _tag(text, spans)
    objects: list[tuple[ObjectClaim, list]] = []
    owned: list[list[int]] = []  # tag indices of each object
    pending_tags: list[int] = []
    pending, background = _Pending(), None
    np_open = False  # a determiner opened a noun phrase whose shape has not come yet
    for i, (tag, value, surface) in enumerate(tags):
        nxt = tags[i + 1][0] if i + 1 < len(tags) else None
        if tag == "BGCOLOUR":
            if nxt in ("SHAPE", "SIZE", "COLOUR") or (pending.colour or pending.size):
                raise PromptError(f"'{surface}' is a background colour, not an object colour; "
                                  f"objects are {COLOUR_LIST}.")
            if background not in (None, value):
                raise PromptError(f"the prompt names two backgrounds ({background} and {value}).")
            background = value
        elif tag == "COLOUR":
            if nxt == "BGNOUN":
                raise PromptError(f"'{surface}' is not a background colour; backgrounds are {BACKGROUND_LIST}.")
            if pending.colour:
                raise PromptError(f"one object has two colours ({pending.colour} and {value}).")
            pending.colour = value
            pending_tags.append(i)
        elif tag == "SIZE":
            if pending.size:
                raise PromptError(f"one object has two sizes ({pending.size} and {value}).")
            pending.size = value
            pending_tags.append(i)
        elif tag == "SHAPE":
            objects.append((ObjectClaim(value, pending.colour, pending.size), pending.parts))
            owned.append([*pending_tags, i])
            pending, pending_tags, np_open = _Pending(), [], False
        elif tag in ("DET", "BGNOUN"):
            np_open = tag == "DET"
        elif tag in ("MOTION", "DIR", "VERB", "SPEED", "DIAG"):
            if np_open or not pending.empty() or not objects:  # before its noun: "a spinning red square"
                pending.parts.append((tag, value, surface))
                pending_tags.append(i)
            else:
                objects[-1][1].append((tag, value, surface))
                owned[-1].append(i)
    if not pending.empty():
        words = " ".join(w for w in [pending.size, pending.colour] + [p[2] for p in pending.parts] if w)
        raise PromptError(f"'{words}' does not describe any shape; name a circle, square or triangle.")
    if not objects:
        raise PromptError("the prompt names no object; name a circle, square or triangle.")
    if len(objects) > 2:
        raise PromptError(f"shapes world v1 has 1 or 2 objects; the prompt names {len(objects)}.")
    claims = []
    for n, (obj, parts) in enumerate(objects, 1):
        where = f"object {n} ({obj.colour or ''} {obj.shape})".replace("( ", "(")
        obj.motion, obj.speed = _motion(parts, where)
        if obj.shape == "circle" and obj.motion == "spinning":
            raise PromptError("a circle cannot visibly spin in shapes world v1; spin a square or triangle.")
        claims.append(obj)
    colours = [o.colour for o in claims if o.colour]
    if len(colours) != len(set(colours)):
        raise PromptError(f"two objects never share a colour in shapes world v1 (both {colours[0]}).")
    return PromptClaims(text, claims, background), owned, spans, tags
