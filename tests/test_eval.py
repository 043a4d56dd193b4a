"""`kinema eval`: each metric on constructed videos whose answer is known, the prompt suite, the
per-attribute summary, the Frechet distance (FD-hand and an I3D TorchScript), the CLI, the JSON and
HTML reports, --compare, the autoencoder table, and the page in headless Chromium."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from kinema.cli import main
from kinema.eval import quality
from kinema.eval.frechet import FD_HAND_DIMS, I3DFeatures, feature_sets, frechet_distance, handcrafted_features
from kinema.eval.judge import judge
from kinema.eval.quality import VideoAnalysis
from kinema.eval.suite import ATTRIBUTES, attribute_outcomes, run_suite, suite_hash, suite_prompts, video_seed
from kinema.text.refine import caption_words
from kinema.world import make_clip

# world seeds, with num_objects=1:
RED_BALL_RIGHT = 94  # "A little red disc travelling to the right in front of a gray background"
BIG_BOX_RIGHT = 58  # "One big green box slowly slides right on grey."
FAST_BLUE_BALL = 219  # "A large blue dot gliding right fast over a navy backdrop."


def static_video(seed=5, T=17):
    return np.repeat(make_clip(seed, num_objects=1).frames[:1], T, axis=0)


# ----------------------------------------------------------------------------- metrics, known answers

def test_a_static_video_scores_flicker_1_and_dynamic_degree_0():
    v = static_video()
    q = VideoAnalysis(v).quality()
    assert q["temporal_flickering"] == 1.0
    assert q["dynamic_degree"] == 0.0 and quality.dynamic_degree(v)[0] is False
    assert q["motion_smoothness"] == 1.0
    assert q["subject_consistency"] == pytest.approx(1.0) and q["background_consistency"] == pytest.approx(1.0)


def test_a_moving_video_is_dynamic_and_flickers_below_1():
    v = make_clip(FAST_BLUE_BALL, num_objects=1).frames  # ~2.6 px a frame; VBench's bar at 64 px is 1.5
    moving, scores = quality.dynamic_degree(v)
    assert moving and len(scores) == 16 and max(scores) > 6.0 * 64 / 256
    assert quality.temporal_flickering(v) < 1.0


def test_flow_follows_a_translated_shape():
    clip = make_clip(FAST_BLUE_BALL, num_objects=1)  # blue on navy: low contrast in grey, clear in the blue channel
    flow = quality.optical_flow(clip.frames[4], clip.frames[5])
    cx = np.array(clip.ground_truth["objects"][0]["centroid"])
    true_dx = cx[5, 0] - cx[4, 0]
    top = quality.flow_top5(flow)
    assert true_dx > 1 and abs(top - true_dx) < 0.5 * true_dx  # mean of the largest 5 % ~ the true motion


def test_shuffled_frames_score_worse_on_motion_smoothness():
    for seed in (BIG_BOX_RIGHT, RED_BALL_RIGHT):
        v = make_clip(seed, num_objects=1).frames
        shuffled = v[np.random.default_rng(0).permutation(len(v))]
        assert quality.motion_smoothness(shuffled) < quality.motion_smoothness(v) - 0.01


def test_a_colour_swapped_video_fails_the_judge_on_colour():
    clip = make_clip(RED_BALL_RIGHT, num_objects=1)
    assert judge(clip.frames, clip.text).passed
    swapped = clip.frames[..., [1, 0, 2]]  # red (230, 50, 50) -> (50, 230, 50): green; gray stays gray
    v = judge(swapped, clip.text)
    failed = {c.attribute: c for c in v.failed()}
    assert set(failed) == {"colour"} and failed["colour"].measured == "green"
    assert attribute_outcomes(v) == {"count": True, "background": True, "colour": False, "shape": True,
                                     "size": True, "motion": True}


def test_consistency_drops_when_background_or_subject_changes():
    v = static_video(seed=RED_BALL_RIGHT).copy()
    bg_changed = v.copy()
    bg = np.array([110, 110, 110], np.uint8)
    half = bg_changed[9:]
    half[(half == bg).all(-1)] = (20, 30, 80)  # the gray background turns navy half-way
    assert quality.background_consistency(bg_changed) < 0.8 < quality.background_consistency(v)
    subj_changed = v[..., [1, 0, 2]].copy()
    subj_changed[:9] = v[:9]  # the red ball turns green half-way
    assert quality.subject_consistency(subj_changed) < 0.9 < quality.subject_consistency(v)


def test_consistency_formula_matches_vbench():
    f = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # frame 1 and 2 orthogonal to frame 0
    # t=1: (max(0, cos(f1, f0)) + cos(f1, f0)) / 2 = 0; t=2: (0 + 1) / 2 = 0.5 -> mean 0.25
    assert quality.consistency(f) == pytest.approx(0.25)


def test_metrics_refuse_non_video_input():
    with pytest.raises(ValueError, match=r"uint8 video shaped \(T, H, W, 3\)"):
        quality.temporal_flickering(np.zeros((4, 8, 8), np.uint8))


# ----------------------------------------------------------------------------- Frechet distance

def test_frechet_distance_is_zero_on_one_set_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=1e-6)  # |mu diff|^2, same covariance
    with pytest.raises(ValueError, match="two feature sets"):
        frechet_distance(a, a[:, :3])


def test_fd_hand_tells_real_clips_from_degraded_ones():
    real = [VideoAnalysis(make_clip(s, 32, 32, 9).frames) for s in range(24)]
    other = [VideoAnalysis(make_clip(s, 32, 32, 9).frames) for s in range(100, 124)]
    rng = np.random.default_rng(0)
    noisy = [VideoAnalysis(np.clip(a.frames.astype(int) + rng.integers(-40, 40, a.frames.shape), 0, 255)
                           .astype(np.uint8)) for a in other]
    name, f = feature_sets({"real": real, "other": other, "noisy": noisy})
    assert name == "FD-hand" and f["real"].shape == (24, FD_HAND_DIMS)
    assert np.isfinite(f["real"]).all() and handcrafted_features(real[0]).shape == (FD_HAND_DIMS,)
    assert frechet_distance(f["real"], f["other"]) < frechet_distance(f["real"], f["noisy"])


class TinyI3D(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: same call, (B, 3, T, 224, 224) in [-1, 1] -> features."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = True) -> torch.Tensor:
        assert x.shape[1] == 3 and x.shape[-1] == 224
        return torch.cat([x.mean((2, 3, 4)), x.std((2, 3, 4))], dim=1)  # (B, 6)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_an_i3d_torchscript_file_gives_fvd(tmp_path):
    path = tmp_path / "i3d.pt"
    torch.jit.script(TinyI3D()).save(str(path))
    clips = [VideoAnalysis(make_clip(s, 32, 32, 5).frames) for s in range(3)]
    assert I3DFeatures(path)([c.frames for c in clips]).shape == (3, 6)
    name, f = feature_sets({"a": clips}, i3d=path)
    assert name == "FVD" and f["a"].shape == (3, 6)
    with pytest.raises(FileNotFoundError, match="no I3D TorchScript file"):
        I3DFeatures(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- the suite

def test_shapes_v1_is_deterministic_balanced_and_pinned():
    prompts = suite_prompts("shapes-v1", 100)
    assert prompts == suite_prompts("shapes-v1", 100) and prompts[:8] == suite_prompts("shapes-v1", 8)
    assert [(p.kind, p.num_objects) for p in prompts[:4]] == [("detailed", 1), ("short", 1), ("detailed", 2),
                                                               ("short", 2)]
    assert len({p.text for p in prompts}) == 100
    # A change to the world's captioner (or to the suite's rules) must be a new suite name.
    assert suite_hash(prompts) == "2d252ba0de7355b7b612ed151c11abcb08161a19db302e028e100f3fb1379e30"
    assert video_seed(3, 1) == 3001


def test_wording_suites_split_the_held_out_words():
    from kinema.world.parse import _normalise
    from kinema.world.vocab import HELD_OUT_WORDS
    held = set(HELD_OUT_WORDS)
    trained, heldout = suite_prompts("shapes-v1-trained", 12), suite_prompts("shapes-v1-heldout", 12)
    assert not any(held & set(_normalise(p.text)) for p in trained)
    assert sum(bool(held & set(_normalise(p.text))) for p in heldout) >= 10
    assert {p.world_seed for p in trained}.isdisjoint(p.world_seed for p in suite_prompts("shapes-v1", 12))
    with pytest.raises(ValueError, match="unknown prompt suite 'shapes-v9'"):
        suite_prompts("shapes-v9", 3)


class OraclePipe:
    """Returns the suite's own world clip for each prompt (optionally colour-swapped): the judge's
    answer is known, so the per-attribute summary is too."""

    class defaults:  # mimics PipelineDefaults
        num_frames, height, width, num_inference_steps, guidance_scale, fps, eta = 17, 64, 64, 1, 1.0, 8.0, 0.0

    def __init__(self, prompts, swap=False):
        self.clips = {p.text: make_clip(p.world_seed, 64, 64, 17, num_objects=p.num_objects).frames for p in prompts}
        self.swap = swap

    def check_inputs(self, *args):
        pass

    def __call__(self, prompt, **kwargs):
        frames = self.clips[prompt]
        return type("Out", (), {"frames": [frames[..., [1, 0, 2]] if self.swap else frames]})


def test_run_suite_summarises_per_attribute_and_by_object_count():
    prompts = suite_prompts("shapes-v1", 8)
    run = run_suite(OraclePipe(prompts), prompts, videos_per_prompt=2, progress=False)
    assert [(r.prompt.id, r.index, r.seed) for r in run.results[:3]] == [(0, 0, 0), (0, 1, 1), (1, 0, 1000)]
    s = run.summary()
    assert s["videos"] == 16 and s["rate"] == 1.0
    assert {"colour", "shape", "motion", "count"} <= set(s["by_attribute"]) <= set(ATTRIBUTES)
    assert all(a["rate"] == 1.0 for a in s["by_attribute"].values())
    assert s["by_objects"]["1"]["videos"] == s["by_objects"]["2"]["videos"] == 8
    assert s["by_kind"]["detailed"]["by_attribute"]["background"]["videos"] == 8
    record = run.results[0].to_json()
    assert record["pass"] and record["attributes"]["colour"] and record["checks"][0]["attribute"] == "count"
    assert record["untrained"] == [] and s["by_wording"]["untrained"] == {"videos": 0}  # this pipe cannot tell
    assert s["by_wording"]["trained"]["videos"] == 16

    swapped = run_suite(OraclePipe(prompts, swap=True), prompts, videos_per_prompt=1, progress=False).summary()
    # R<->G moves every object colour off its word (or off the palette: then the object is missing
    # and fails every attribute it names); gray and black stay, navy stays navy.
    assert swapped["rate"] == 0.0 and swapped["by_attribute"]["colour"]["rate"] == 0.0
    assert swapped["by_attribute"]["background"]["rate"] == 1.0


# ----------------------------------------------------------------------------- end to end with a tiny model

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from kinema.autoencoder import CausalVideoVAE, VAEConfig
    from kinema.models.dit import DiT, dit_config
    from kinema.pipelines.pipeline import PipelineDefaults, save_pipeline_folder

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("model")
    vae = CausalVideoVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), norm_groups=4))
    vae.save_pretrained(root / "vae_src")
    cfg = dit_config("dit-t", hidden_size=48, depth=2, num_heads=2, in_channels=4, text_dim=384)
    vocabulary = caption_words(p.text for p in suite_prompts("shapes-v1", 4))
    vocabulary.pop("background", None)  # an untrained word for the prompt refiner
    return save_pipeline_folder(root / "model", root / "vae_src", DiT(cfg), cfg, "minilm", 32,
                                PipelineDefaults(num_frames=5, height=32, width=32, num_inference_steps=2,
                                                 guidance_scale=2.0), vocabulary, "test")


@pytest.fixture(scope="module")
def reports(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    args = ["eval", "--model", str(tiny_model), "--prompts", "4", "--videos-per-prompt", "2", "--gifs", "3", "--quiet"]
    assert main([*args, "--out", str(out / "a"), "--label", "tiny-a", "--width", "32", "--height", "32",
                 "--frames", "5"]) == 0
    # No size flags: the model's own defaults (32x32x5 in its model_index.json), not 64x64x17.
    assert main([*args, "--out", str(out / "b"), "--label", "tiny-b", "--steps", "1", "--no-refine",
                 "--compare", str(out / "a")]) == 0
    return out


def test_eval_writes_json_html_and_gifs(reports):
    r = json.loads((reports / "a" / "report.json").read_text())
    assert r["kind"] == "kinema-eval" and r["label"] == "tiny-a"
    assert r["suite"]["name"] == "shapes-v1" and r["suite"]["prompts"] == 4 and r["suite"]["videos_per_prompt"] == 2
    assert (r["suite"]["width"], r["suite"]["height"], r["suite"]["num_frames"]) == (32, 32, 5)
    assert len(r["videos"]) == 8 and {v["seed"] for v in r["videos"]} == {0, 1, 1000, 1001, 2000, 2001, 3000, 3001}
    # prompt refinement is the model's default; "read_as" records what the DiT read where it differs
    background = [v for v in r["videos"] if "background" in v["text"]]
    assert r["suite"]["refine_prompt"] is True and background
    assert all(v["read_as"] != v["text"] and "background" not in v["read_as"].lower() for v in background
               if v["read_as"] is not None)
    assert r["adherence"]["videos"] == 8 and "by_objects" in r["adherence"]
    for k in quality.METRICS:
        assert k in r["quality"]["generated"] and k in r["quality"]["real"]
    assert r["quality"]["real"]["background_consistency"] == pytest.approx(1.0, abs=1e-3)
    fd = r["frechet"]
    assert fd["name"] == "FD-hand" and fd["generated_vs_real"] > fd["real_vs_real"] >= 0 and "not FVD" in fd["features"]
    gifs = sorted(p.name for p in (reports / "a" / "gifs").iterdir())
    assert gifs == ["p0000_v0.gif", "p0001_v0.gif", "p0002_v0.gif"]
    page = (reports / "a" / "report.html").read_text()
    assert "<title>Kinema eval: tiny-a on shapes-v1</title>" in page
    for marker in ('id="fig-attributes"', 'id="fig-splits"', 'id="table-quality"', 'id="table-frechet"',
                   'class="samples"', "data:image/gif;base64,", "VBench-style", "FD-hand"):
        assert marker in page
    assert "FVD" not in page.replace("not FVD", "")  # the substitute is never called FVD


def test_compare_puts_two_models_side_by_side(reports, tmp_path):
    page = (reports / "b" / "report.html").read_text()
    assert "<title>Kinema eval: tiny-b vs tiny-a on shapes-v1</title>" in page
    suite = json.loads((reports / "b" / "report.json").read_text())["suite"]
    assert (suite["width"], suite["height"], suite["num_frames"], suite["num_inference_steps"]) == (32, 32, 5, 1)
    assert suite["refine_prompt"] is False
    b = json.loads((reports / "b" / "report.json").read_text())
    assert all(v["read_as"] is None for v in b["videos"])
    # read as written, "background" (left out of the tiny model's vocabulary) is an untrained word
    said = [v for v in b["videos"] if "background" in v["text"].lower()]
    assert said and all(v["untrained"] == ["background"] for v in said)
    assert b["adherence"]["by_wording"]["untrained"]["videos"] == len(said)
    assert "read with an untrained word" in page
    assert page.count("Samples: ") == 2 and "tiny-a" in page and "tiny-b" in page
    assert main(["eval", "--report", str(reports / "a"), "--compare", str(reports / "b" / "report.json"),
                 "--out", str(tmp_path / "c")]) == 0
    again = (tmp_path / "c" / "report.html").read_text()
    assert "tiny-a vs tiny-b" in again and (tmp_path / "c" / "gifs" / "p0000_v0.gif").is_file()


def test_eval_cli_errors_are_one_line(tiny_model, tmp_path, capsys):
    cases = [(["--model", str(tiny_model), "--suite", "shapes-v9"], "unknown prompt suite 'shapes-v9'"),
             (["--model", str(tmp_path / "nope")], "no model folder"),
             (["--model", str(tiny_model), "--prompts", "0"], "number of prompts must be >= 1"),
             (["--model", str(tiny_model), "--vae", str(tmp_path)], "give one of --model, --report or --vae"),
             (["--model", str(tiny_model), "--compare", str(tmp_path / "none")], "no kinema eval report"),
             (["--model", str(tiny_model), "--i3d", str(tmp_path / "i3d.pt")], "no I3D TorchScript file"),
             (["--vae", str(tmp_path)], "not an autoencoder folder"),
             (["--vae", str(tmp_path), "--prompts", "5"], "--prompts does not apply to --vae"),
             (["--report", str(tmp_path), "--steps", "5"], "--steps does not apply to --report"),
             (["--model", str(tiny_model), "--clips", "5"], "--clips does not apply to a --model run")]
    for args, message in cases:
        assert main(["eval", *args, "--out", str(tmp_path / "r"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r" / "report.json").exists()  # nothing half-written


def test_eval_vae_reports_by_compression_ratio(tiny_model, tmp_path):
    assert main(["eval", "--vae", str(tiny_model / "vae"), "--clips", "2", "--width", "32", "--height", "32",
                 "--frames", "5", "--out", str(tmp_path), "--quiet"]) == 0
    r = json.loads((tmp_path / "report.json").read_text())
    row = r["autoencoders"][0]
    assert r["kind"] == "kinema-eval-vae" and row["compression"] == "4x8x8, 4 ch"
    assert row["ratio"] == pytest.approx(3 * 4 * 8 * 8 / 4) and row["clips"] == 2
    assert row["latent_shape"] == [4, 2, 4, 4]
    assert {"psnr", "ssim", "judge_pass", "judge_original"} <= set(row)
    page = (tmp_path / "report.html").read_text()
    assert 'id="table-vae"' in page and 'id="fig-vae-psnr"' in page


# ----------------------------------------------------------------------------- the page in a browser

def find_chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(find_chromium() is None, reason="no headless Chromium on this machine "
                    "(apt-get install chromium-headless-shell, or chromium)")
def test_the_report_renders_in_headless_chromium(reports, tmp_path):
    page = (reports / "b" / "report.html").resolve()
    browser = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--window-size=1200,2400"]
    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "<title>Kinema eval: tiny-b vs tiny-a on shapes-v1</title>" in dom
    assert dom.count("<svg") >= 2 and 'id="fig-attributes"' in dom and dom.count("<img") >= 6
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1200)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # text, bars and GIFs were painted, not a blank page
