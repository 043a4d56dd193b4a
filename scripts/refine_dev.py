"""A development set for prompt refinement that never touches the held-out wording.

Leave one trained word out: for each trained word w that has a trained synonym of one word (ball ->
circle, dot; sliding -> moving, heading, ...), take world captions that use w (seeds of their own,
held-out wording excluded), drop w from the model's training vocabulary, refine, and ask the
world's prompt parser whether the rewrite still claims what the caption did (same objects, colours,
sizes, shapes, motions, speeds, background). A rewrite is **right** when it does, **wrong** when it
claims something else or cannot be parsed, **kept** when the refiner left w as written (the parser
reads w, but the DiT never trained on it). The held-out test (suite `shapes-v1-heldout`) stays a
test: tune the refiner's rule here.

    python scripts/refine_dev.py kinema/weights/default --captions 12
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

import torch

from kinema.pipelines import KinemaPipeline
from kinema.text import load_text_encoder
from kinema.text.refine import WORD, PromptRefiner
from kinema.world import clip_captions
from kinema.world import vocab as V
from kinema.world.parse import PromptError, parse_prompt

DEV_SEED = 2_040_000_000  # far from the suites' (2,000,000,000 + 10,000,000 k, k < 3) and training's


def dev_words(trained: set[str]) -> list[str]:
    """Trained single words whose concept has another trained single word (the parser's tables)."""
    groups = [list(forms) for forms in V.SHAPE_WORDS.values()] + [list(f) for f in V.SIZE_WORDS.values()]
    groups += [list(f) for f in V.SPEED_WORDS.values()]
    groups += [[p for p, _ in V.MOVE_VERBS], [s for _, s in V.MOVE_VERBS]]
    groups += [[p for p, _ in forms] for forms in V.MOTION_PHRASES.values()]
    groups += [[s for _, s in forms] for forms in V.MOTION_PHRASES.values()]
    groups += [list(f) for f in V.DIRECTION_PHRASES.values()]
    out = []
    for group in groups:
        single = [w for w in group if " " not in w and w in trained and w not in V.HELD_OUT_WORDS]
        if len(single) >= 2:
            out += [w for w in single if w not in out]
    return out


def claims(text: str):
    c = parse_prompt(text)
    return c.background, [(o.shape, o.colour, o.size, o.motion, o.speed) for o in c.objects]


def dev_prompts(word: str, n: int, tries: int = 4000) -> list[str]:
    out = []
    for i in range(tries):
        for text in clip_captions(DEV_SEED + i, exclude_words=V.HELD_OUT_WORDS, prefer_words=(word,)):
            if word in {m.lower() for m in WORD.findall(text)} and text not in out:
                out.append(text)
        if len(out) >= n:
            break
    return out[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a model folder with caption_vocab.json")
    ap.add_argument("--captions", type=int, default=12, help="captions per left-out word")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--words", nargs="+", help="only these left-out words (default: every dev word)")
    ap.add_argument("--json", help="write every rewrite here")
    ap.add_argument("--encoder", help="refine with this text encoder (a local Hugging Face folder, or "
                    "'minilm') instead of the model's own")
    ap.add_argument("--no-lexicon", action="store_true", help="refine with the encoder alone (no WordNet)")
    ap.add_argument("--no-slot", action="store_true", help="ignore the training word pairs (the rule before "
                    "session 20)")
    ap.add_argument("--kin-min-restored", type=float, help="the restored share a WordNet kin must reach "
                    "(default: the refiner's own)")
    ap.add_argument("--gloss-senses", type=int, help="words WordNet's definitions name count from each part of "
                    "speech's first N senses; 0: none (default: the refiner's own)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    shipped = KinemaPipeline.from_pretrained(a.model).refiner  # the model's own encoder, length and rule
    if shipped is None:
        raise SystemExit(f"{a.model} has no caption_vocab.json (scripts/caption_vocab.py writes one)")
    encoder = shipped.encoder if a.encoder is None else load_text_encoder(a.encoder, shipped.encoder.max_length)
    total, rows = Counter(), []
    words = dev_words(shipped.known)
    for word in a.words or []:
        if word not in words:
            raise SystemExit(f"'{word}' is not a dev word of this vocabulary; they are: {', '.join(words)}")
    for word in a.words or words:
        refiner = PromptRefiner(encoder, Counter({w: c for w, c in shipped.vocabulary.items() if w != word}),
                                shipped.min_restored, shipped.shortlist,
                                lexicon=None if a.no_lexicon else shipped.lexicon,
                                kin_min_restored=shipped.kin_min_restored if a.kin_min_restored is None
                                else a.kin_min_restored, pairs=None if a.no_slot else shipped.pairs,
                                gloss_senses=shipped.gloss_senses if a.gloss_senses is None else a.gloss_senses)
        tally, tos = Counter(), Counter()
        for text in dev_prompts(word, a.captions):
            r = refiner(text)
            new, restored = next(((n, s) for w, n, s in r.changes if w.lower() == word), (None, None))
            if new is None:
                outcome = "kept"
            else:
                try:
                    outcome = "right" if claims(r.text) == claims(text) else "wrong"
                except PromptError:
                    outcome = "wrong"
            tally[outcome] += 1
            tos[new] += 1
            rows.append({"word": word, "text": text, "read_as": r.text, "to": new, "restored": restored,
                         "outcome": outcome})
        total.update(tally)
        print(f"{word:>11}: right {tally['right']:2d}  wrong {tally['wrong']:2d}  kept {tally['kept']:2d}   "
              + ", ".join(f"{t} {n}" for t, n in tos.most_common(4)), flush=True)
    n = sum(total.values())
    print(f"all {n}: right {total['right']} ({100 * total['right'] / n:.1f} %), wrong {total['wrong']} "
          f"({100 * total['wrong'] / n:.1f} %), kept {total['kept']} ({100 * total['kept'] / n:.1f} %)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
