"""Write a scene's captions: a detailed one (exact: every attribute) and a short one.

The detailed caption names, for each object, size, colour, shape, motion (with its speed word
when the motion has one) and the background. The short caption names colour, shape and motion,
and sometimes size; what it names is exact. Wording varies by synonyms, word order, verb
form and joiners, always from `vocab`, so the parser reads back every caption written here.
`exclude` removes surface forms (e.g. held-out synonyms) from what the captioner may use;
`prefer` makes it pick a form containing one of these words wherever an option has one (the
held-out generalisation prompts: `vocab.HELD_OUT_WORDS`).
"""
from __future__ import annotations

from collections.abc import Collection

from . import vocab
from .scene import Scene, Track, _Rng

JOINERS = [" and ", " while ", " as ", ", and ", ", while "]
BACKGROUND_PHRASES = ["on a {} background", "against a {} background", "over a {} backdrop",
                      "in front of a {} background", "on {}"]


class _Writer:
    def __init__(self, rng: _Rng, exclude: Collection[str], prefer: Collection[str] = ()):
        self.rng, self.exclude, self.prefer = rng, set(exclude), set(prefer)

    def pick(self, options: list):
        """A random option whose words are not excluded (options may be (participle, present)),
        among the preferred ones if any option has a preferred word."""
        def has(o, words_set):
            words = " ".join(o) if isinstance(o, tuple) else o
            return any(w in words_set for w in [words, *words.split()])
        allowed = [o for o in options if not has(o, self.exclude)]
        if not allowed:
            raise ValueError(f"every wording of {options} is excluded")
        preferred = [o for o in allowed if has(o, self.prefer)]
        return self.rng.choice(preferred or allowed)

    def noun_phrase(self, tr: Track, with_size: bool) -> str:
        words = [self.pick(vocab.SIZE_WORDS[tr.size])] if with_size else []
        words += [tr.colour, self.pick(vocab.SHAPE_WORDS[tr.shape])]
        det = self.pick(["a", "a", "a", "one"])
        return f"{vocab.article(words[0]) if det == 'a' else det} {' '.join(words)}"

    def verb_phrase(self, tr: Track, present: bool, with_speed: bool) -> str:
        form = 1 if present else 0
        m = tr.motion
        if m in vocab.AXIS_MOTIONS and m in vocab.DIRECTED_VERBS and self.rng.chance(0.25):
            core = self.pick(vocab.DIRECTED_VERBS[m])[form]
            verb, direction = core, ""
        elif m in vocab.LINEAR_MOTIONS:
            verb, direction = self.pick(vocab.MOVE_VERBS)[form], self.pick(vocab.DIRECTION_PHRASES[m])
        else:
            return self.pick(vocab.MOTION_PHRASES[m])[form]
        adverb = self.pick(vocab.SPEED_WORDS[tr.speed]) if (with_speed and tr.speed) else ""
        before = adverb and adverb != "fast" and self.rng.chance(0.4)
        parts = [adverb if before else "", verb, direction, "" if before else adverb]
        return " ".join(p for p in parts if p)

    def clause(self, tr: Track, present: bool, detailed: bool) -> str:
        with_size = detailed or self.rng.chance(0.25)
        return f"{self.noun_phrase(tr, with_size)} {self.verb_phrase(tr, present, detailed)}"

    def clauses(self, scene: Scene, present: bool, detailed: bool) -> str:
        parts = [self.clause(tr, present, detailed) for tr in scene.objects]
        return self.pick(JOINERS).join(parts)

    def background(self, scene: Scene) -> str:
        word = self.pick(vocab.BACKGROUND_WORDS[scene.background])
        return self.pick(BACKGROUND_PHRASES).format(word)


def _sentence(text: str, period: bool) -> str:
    text = text[0].upper() + text[1:]
    return text + "." if period else text


def detailed_caption(scene: Scene, rng: _Rng, exclude: Collection[str] = (),
                     prefer: Collection[str] = ()) -> str:
    w = _Writer(rng, exclude, prefer)
    template = rng.choice(["after", "after", "before", "clause", "video"])
    present = template != "video" and rng.chance(0.5)
    body = w.clauses(scene, present, detailed=True)
    bg = w.background(scene)
    if template == "after":
        text = f"{body} {bg}"
    elif template == "before":
        text = f"{bg}, {body}"
    elif template == "clause":
        text = f"{body}; the background is {w.pick(vocab.BACKGROUND_WORDS[scene.background])}"
    else:
        text = f"a video of {body} {bg}"
    return _sentence(text, rng.chance(0.7))


def short_caption(scene: Scene, rng: _Rng, exclude: Collection[str] = (),
                  prefer: Collection[str] = ()) -> str:
    w = _Writer(rng, exclude, prefer)
    return _sentence(w.clauses(scene, rng.chance(0.5), detailed=False), rng.chance(0.3))


def captions(scene: Scene, exclude: Collection[str] = (), prefer: Collection[str] = ()) -> tuple[str, str]:
    """(detailed, short) captions of a scene; deterministic given the scene's seed."""
    rng = _Rng(scene.seed ^ 0x5EED_CA97)  # its own stream: captions never shift the pixels
    return detailed_caption(scene, rng, exclude, prefer), short_caption(scene, rng, exclude, prefer)
