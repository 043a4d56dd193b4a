"""Reading prompts in the world's vocabulary, and clear errors for the rest."""
import pytest

from kinema.world import PromptError, parse_prompt
from kinema.world.parse import swap_objects


def summary(text):
    c = parse_prompt(text)
    return c.background, [(o.colour, o.shape, o.size, o.motion, o.speed) for o in c.objects]


@pytest.mark.parametrize("text,expected", [
    ("a red ball moving right", (None, [("red", "circle", None, "right", None)])),
    ("On a grey background, a small cyan square spins.", ("gray", [("cyan", "square", "small", "spinning", None)])),
    ("A spinning red square", (None, [("red", "square", None, "spinning", None)])),
    ("a big blue box slides quickly to the left against a navy backdrop",
     ("navy", [("blue", "square", "big", "left", "quick")])),
    ("slowly, a tiny white dot drifts upward", (None, [("white", "circle", "small", "up", "slow")])),
    ("a green triangle moving diagonally up-right and a purple disc falls and bounces on black",
     ("black", [("green", "triangle", None, "up-right", None), ("purple", "circle", None, "bouncing", None)])),
    ("a yellow block moving up and to the left while a bouncing orange ball",
     (None, [("yellow", "square", None, "up-left", None), ("orange", "circle", None, "bouncing", None)])),
    ("a red ball and a spinning blue square", (None, [("red", "circle", None, None, None),
                                                      ("blue", "square", None, "spinning", None)])),
    ("A large purple circle gets smaller; the background is navy.",
     ("navy", [("purple", "circle", "big", "shrinking", None)])),
    ("there is a little orange triangle that is motionless", (None, [("orange", "triangle", "small", "still", None)])),
    ("a cyan disc rises fast", (None, [("cyan", "circle", None, "up", "quick")])),
    ("a ball", (None, [(None, "circle", None, None, None)])),
])
def test_parses(text, expected):
    assert summary(text) == expected


def test_unknown_words_are_listed():
    with pytest.raises(PromptError) as e:
        parse_prompt("a red dragon flying over the castle")
    assert e.value.unknown_words == ["dragon", "flying", "castle"]
    assert "'dragon'" in str(e.value) and "vocabulary" in str(e.value)


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("   ", "empty"),
    ("a gray square moving left", "background colour, not an object colour"),
    ("a red ball on a blue background", "not a background colour"),
    ("a spinning red circle", "cannot visibly spin"),
    ("a red ball, a blue box and a green triangle", "1 or 2 objects"),
    ("a red ball moving left and bouncing", "more than one motion"),
    ("a red ball and a red square", "share a colour"),
    ("a red ball moving", "needs a direction"),
    ("a red ball moving diagonally left", "two directions"),
    ("a red ball spinning quickly", "qualifies only moving"),
    ("on a gray background", "names no object"),
    ("a red ball on a gray background on black", "two backgrounds"),
    ("a small big red ball", "two sizes"),
    ("a red blue ball", "two colours"),
    ("a ball and a red", "does not describe any shape"),
])
def test_errors_say_why(text, message):
    with pytest.raises(PromptError, match=message):
        parse_prompt(text)


@pytest.mark.parametrize("text, swapped", [
    ("a red square moving left while a blue triangle spins", "a blue triangle moving left while a red square spins"),
    ("An orange triangle spinning and a small box moving left",  # the articles follow their new words
     "A small box spinning and an orange triangle moving left"),
    ("Against a black background, one big white ball rising, and a little cyan dot staying still.",
     "Against a black background, one little cyan dot rising, and a big white ball staying still."),
    ("A small purple square falling and bouncing as a little orange triangle bouncing up and down; "
     "the background is gray",
     "A little orange triangle falling and bouncing as a small purple square bouncing up and down; "
     "the background is gray"),
])
def test_swap_objects_gives_each_object_the_others_motion(text, swapped):
    assert swap_objects(text) == swapped
    a, b = parse_prompt(text).objects, parse_prompt(swapped).objects
    assert [(o.shape, o.colour, o.size) for o in a] == [(o.shape, o.colour, o.size) for o in reversed(b)]
    assert [(o.motion, o.speed) for o in a] == [(o.motion, o.speed) for o in b]  # the motions stay in place


@pytest.mark.parametrize("text", ["a red ball moving left", "three purple blobs", ""])
def test_swap_objects_needs_two_objects(text):
    assert swap_objects(text) is None
