"""The shipped default model (kinema/weights/default): it loads with no argument and no network,
fits the size budget, and makes a video the judge passes from the README's command line."""
import json
import subprocess
import sys

import torch

from kinema.data.video_io import read_video
from kinema.eval.judge import judge
from kinema.pipelines import KinemaPipeline
from kinema.pipelines.pipeline import DEFAULT_MODEL_DIR

PROMPT, SEED = "a big red circle moving right on a gray background", 0


def test_shipped_weights_are_safetensors_within_budget():
    files = [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()]
    names = sorted(p.relative_to(DEFAULT_MODEL_DIR).as_posix() for p in files)
    assert names == ["caption_vocab.json", "dit/config.json", "dit/model.safetensors", "model_index.json",
                     "vae/config.json", "vae/model.safetensors", "verifier/config.json",
                     "verifier/model.safetensors"], names
    assert sum(p.stat().st_size for p in files) <= 60 * 2**20
    index = json.loads((DEFAULT_MODEL_DIR / "model_index.json").read_text())
    assert index["text_encoder"] == "minilm"  # the PyPI-shipped encoder: nothing to download
    d = index["defaults"]
    assert (d["num_frames"], d["height"], d["width"]) == (17, 64, 64)


def test_shipped_vocabulary_holds_out_the_held_out_wording_and_refines_it():
    """The shipped caption_vocab.json is the training pool's wording (no held-out word), and the
    shipped model's prompt refinement brings held-out words back to trained ones."""
    from kinema.world.vocab import HELD_OUT_WORDS

    pipe = KinemaPipeline.from_pretrained()
    assert len(pipe.refiner.vocabulary) == 95 and not pipe.refiner.known & set(HELD_OUT_WORDS)
    assert pipe.refiner.pairs and not any(set(k.split()) & set(HELD_OUT_WORDS) for k in pipe.refiner.pairs)
    assert pipe.refine([PROMPT]) == [PROMPT]
    assert pipe.refine(["a tiny red circle moving right on a grey backdrop"]) == \
        ["a small red circle moving right on a gray background"]


def test_default_model_follows_a_fixed_prompt():
    pipe = KinemaPipeline.from_pretrained()  # no argument: the shipped model
    assert pipe.verifier is not None and pipe.default_candidates == 4  # fitted on the shipped DiT: best of 4
    assert pipe.verifier.cfg.reader and pipe.verifier.reader is not None  # with its scene reader
    out = pipe(PROMPT, generator=torch.Generator().manual_seed(SEED), output_type="uint8", progress=False)
    frames = out.frames[0]
    assert frames.shape == (17, 64, 64, 3) and out.scores.shape == (1, 4)
    verdict = judge(frames, PROMPT)
    assert verdict.passed, [(c.check, c.expected, c.measured) for c in verdict.failed()]


def test_readme_generate_command_makes_an_mp4(tmp_path):
    out = tmp_path / "first.mp4"
    r = subprocess.run([sys.executable, "-m", "kinema", "generate", PROMPT, "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    video = read_video(out)
    assert video.shape == (17, 64, 64, 3) and video.std() > 5  # a real picture, not a flat frame
    assert json.loads(r.stdout)["untrained"] == [] and "never trained" not in r.stderr
    assert json.loads(r.stdout)["candidates"] == 4  # the shipped verifier's best of 4


def test_generate_names_the_words_the_model_never_trained_on(tmp_path):
    """A word refinement cannot bring back (no trained word is its WordNet kin or restores its
    meaning) reaches the DiT as written; `kinema generate` says so, on stderr and in its JSON."""
    r = subprocess.run([sys.executable, "-m", "kinema", "generate", "a red hexagon bouncing on a grey backdrop",
                        "--out", str(tmp_path / "b.mp4"), "--quiet", "--steps", "2"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    said = json.loads(r.stdout)
    assert said["read_as"] == "a red hexagon bouncing on a gray background" and said["untrained"] == ["hexagon"]
    assert "never trained on 'hexagon'" in r.stderr and "caption_vocab.json" in r.stderr
