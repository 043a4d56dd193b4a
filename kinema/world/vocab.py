"""The shapes world's vocabulary (spec v1, ../shared/WORLD.md): one table for every word.

The captioner writes only from these tables, the prompt parser reads only these tables, and
the judge checks only the meanings defined here, so the three cannot drift apart.
Canonical names are the dictionary keys; the lists are the surface forms (synonyms).
"""
from __future__ import annotations

SPEC_VERSION = "shapes-v1"

# --- colours ---------------------------------------------------------------------------------
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 50, 50),
    "green": (50, 190, 70),
    "blue": (60, 110, 245),
    "yellow": (240, 220, 50),
    "purple": (165, 75, 215),
    "cyan": (50, 215, 225),
    "white": (245, 245, 245),
    "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (16, 16, 16),
    "gray": (110, 110, 110),
    "navy": (20, 30, 80),
}
BACKGROUND_WORDS: dict[str, list[str]] = {"black": ["black"], "gray": ["gray", "grey"], "navy": ["navy"]}

# --- shapes and sizes -----------------------------------------------------------------------
SHAPE_WORDS: dict[str, list[str]] = {
    "circle": ["circle", "ball", "disc", "dot"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle"],
}
# area / (extent^2): extent is the diameter (circle) or side (square) or base = height (triangle).
SHAPE_FILL: dict[str, float] = {"circle": 0.785398, "square": 1.0, "triangle": 0.5}

SIZE_WORDS: dict[str, list[str]] = {"small": ["small", "little", "tiny"], "big": ["big", "large"]}
# extent as a fraction of min(width, height)
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.16, 0.20), "big": (0.30, 0.36)}
SIZE_BOUNDARY = 0.25  # the judge's small/big split: halfway between the two ranges

# --- motions ---------------------------------------------------------------------------------
AXIS_MOTIONS = ("left", "right", "up", "down")
DIAGONAL_MOTIONS = ("up-right", "up-left", "down-right", "down-left")
LINEAR_MOTIONS = AXIS_MOTIONS + DIAGONAL_MOTIONS
MOTIONS = LINEAR_MOTIONS + ("bouncing", "spinning", "growing", "shrinking", "still")
# unit direction in image coordinates (x right, y down)
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up-right": (1, -1), "up-left": (-1, -1), "down-right": (1, 1), "down-left": (-1, 1),
}

SPEED_WORDS: dict[str, list[str]] = {"slow": ["slowly"], "quick": ["quickly", "fast", "rapidly"]}

# Verbs of linear motion: (participle, present tense). Direction follows the verb.
MOVE_VERBS: list[tuple[str, str]] = [
    ("moving", "moves"), ("sliding", "slides"), ("drifting", "drifts"),
    ("gliding", "glides"), ("travelling", "travels"), ("heading", "heads"),
]
DIRECTION_PHRASES: dict[str, list[str]] = {
    "left": ["left", "to the left", "leftward"],
    "right": ["right", "to the right", "rightward"],
    "up": ["up", "upward", "upwards"],
    "down": ["down", "downward", "downwards"],
    "up-right": ["diagonally up-right", "diagonally up and to the right", "up and to the right",
                 "toward the top right"],
    "up-left": ["diagonally up-left", "diagonally up and to the left", "up and to the left",
                "toward the top left"],
    "down-right": ["diagonally down-right", "diagonally down and to the right",
                   "down and to the right", "toward the bottom right"],
    "down-left": ["diagonally down-left", "diagonally down and to the left",
                  "down and to the left", "toward the bottom left"],
}
# Verbs that carry their own direction ("rises"): (participle, present tense).
DIRECTED_VERBS: dict[str, list[tuple[str, str]]] = {
    "up": [("rising", "rises"), ("climbing", "climbs")],
    "down": [("sinking", "sinks"), ("descending", "descends")],
}
# Whole phrases for the other motions: (participle, present tense).
MOTION_PHRASES: dict[str, list[tuple[str, str]]] = {
    "bouncing": [("bouncing", "bounces"), ("falling and bouncing", "falls and bounces"),
                 ("bouncing up and down", "bounces up and down")],
    "spinning": [("spinning", "spins"), ("rotating", "rotates"), ("turning", "turns"),
                 ("spinning in place", "spins in place")],
    "growing": [("growing", "grows"), ("getting bigger", "gets bigger"), ("expanding", "expands")],
    "shrinking": [("shrinking", "shrinks"), ("getting smaller", "gets smaller"),
                  ("contracting", "contracts")],
    "still": [("staying still", "stays still"), ("sitting still", "sits still"),
              ("resting", "rests"), ("sitting", "sits"), ("remaining still", "remains still"),
              ("standing still", "stands still")],
}
# Extra surface forms the parser accepts but the captioner never writes.
PARSER_ONLY_MOTION_WORDS: dict[str, list[str]] = {
    "still": ["still", "motionless", "stationary", "not moving", "at rest"],
    "up-right": ["up right", "toward the upper right", "towards the top right",
                 "towards the upper right"],
    "up-left": ["up left", "toward the upper left", "towards the top left", "towards the upper left"],
    "down-right": ["down right", "toward the lower right", "towards the bottom right",
                   "towards the lower right"],
    "down-left": ["down left", "toward the lower left", "towards the bottom left",
                  "towards the lower left"],
}

# --- held-out wording (the default model never trains on these; docs/default-model.md) --------
# One synonym (or phrase) per concept that has several: training captions exclude every form
# below (`make_clip(..., exclude_words=HELD_OUT_WORDS)`), and the generalisation test writes its
# prompts preferring them (`prefer_words=HELD_OUT_WORDS`), so the model can follow them only
# through what the pretrained text encoder knows. Every concept keeps a trained wording.
HELD_OUT_WORDS: tuple[str, ...] = (
    "disc", "block",                      # circle (circle, ball, dot), square (square, box)
    "tiny", "large",                      # small (small, little), big (big)
    "grey", "backdrop",                   # gray (gray), background
    "drifting", "drifts", "gliding", "glides",      # moving, sliding, travelling, heading
    "descending", "descends", "climbing", "climbs",  # sinking, rising
    "rotating", "rotates", "expanding", "expands", "contracting", "contracts",
    "resting", "rests", "rapidly",
)

# --- glue words --------------------------------------------------------------------------------
DETERMINERS = ["a", "an", "the", "one"]
JOINERS = ["and", "while", "as", "meanwhile", "whereas"]
BACKGROUND_NOUNS = ["background", "backdrop"]
BACKGROUND_PREPOSITIONS = ["on", "against", "over", "in front of"]
# Words that carry no meaning for the judge but are ordinary in a prompt.
FILLER_WORDS = {
    "there", "is", "are", "video", "clip", "of", "with", "showing", "shows", "scene", "in", "it",
    "its", "to", "which", "that", "here", "we", "see", "can", "be", "seen", "animation",
    "object", "shape", "colored", "coloured", "plain", "solid", "flat", "simple", "across",
    "screen", "frame", "canvas", "around", "along",
}


def article(next_word: str) -> str:
    return "an" if next_word[:1] in "aeiou" else "a"
