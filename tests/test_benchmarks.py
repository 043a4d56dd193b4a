"""Smoke runs of the autoencoder benchmarks (benchmarks/compression.py, benchmarks/train_throughput.py):
every configuration runs and the figures are consistent. Their timings are not checked here.
Also the prompt list of scripts/pool_adherence.py and the figure of scripts/tradeoff_plot.py."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))
compression = pytest.importorskip("compression")
train_throughput = pytest.importorskip("train_throughput")
pool_adherence = pytest.importorskip("pool_adherence")


def test_train_throughput_smoke(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert train_throughput.main(["--sizes", "64", "--frames", "5", "--runs", "1", "--batch", "2", "--threads", "1",
                                  "--dit-depth", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["autoencoder"] for r in res["rows"]] == ["4x8x8", "4x16x16", "4x32x32"]
    assert [r["tokens"] for r in res["rows"]] == [32, 32, 8]  # 5 frames at 64 px: 2 latent frames
    for r in res["rows"]:
        assert r["samples_per_s_cached"] == pytest.approx(2 / r["step_s"])
        assert r["samples_per_s_uncached"] < r["samples_per_s_cached"]  # render + encode cost something
    assert res["vae_batch"] == 2  # defaults to the training batch
    assert "vs 4x8x8)" in capsys.readouterr().out.splitlines()[-2]  # the 4x32x32 row carries its ratio


def test_train_throughput_rejects_unknown_autoencoders():
    with pytest.raises(SystemExit):
        train_throughput.main(["--autoencoders", "4x64x64"])


def test_compression_smoke(tmp_path):
    out = tmp_path / "c.json"
    assert compression.main(["--autoencoders", "4x8x8,4x32x32", "--sizes", "64", "--frames", "5", "--runs", "1",
                             "--steps", "1", "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert list(res["ratios"]) == ["4x32x32 vs 4x8x8 at 64x64"]
    for r in res["rows"]:
        assert r["total"] >= r["denoise"] > 0
        assert r["gflop"]["denoise"] > 0 and r["gflop"]["decode"] > 0
    f8, f32 = res["rows"]
    assert f32["gflop"]["denoise"] < f8["gflop"]["denoise"]  # 8 tokens against 32
    q = res["ratios"]["4x32x32 vs 4x8x8 at 64x64"]
    assert q["gflop_total"] == pytest.approx(sum(f32["gflop"].values()) / sum(f8["gflop"].values()))


def test_flop_count_includes_attention():
    """The fused CPU attention kernel is invisible to FlopCounterMode; count_gflop counts on the math
    path, so its figure exceeds a plain count by the attention's 4 N^2 d a block (self) and at most
    4 N L d more (cross-attention to L text tokens)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    pipe = compression.build(["4x32x32"], "dit-t")["4x32x32"]["pipe"]
    counted = compression.count_gflop(pipe, 5, 128, 1, 1.0)["denoise"] * 1e9  # 2 x 4 x 4 = 32 tokens, batch 1
    states, mask = pipe.text_encoder.encode([compression.PROMPT])
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        pipe.dit(torch.zeros(1, *pipe.vae.latent_shape(5, 128, 128)), torch.full((1,), 0.5), states, mask)
    n, length, per_block = 32, states.shape[1], 4 * pipe.dit.cfg.hidden_size * pipe.dit.cfg.depth
    assert per_block * n * n <= counted - plain.get_total_flops() <= per_block * (n * n + n * length)


def test_pool_prompts_come_from_the_training_pool_in_the_suite_pattern():
    from kinema.data.synth import clip_seed
    from kinema.world.vocab import HELD_OUT_WORDS

    prompts = pool_adherence.pool_prompts(8)
    pool = {clip_seed(0, i) for i in range(200)}
    assert all(p.world_seed in pool for p in prompts)  # clips the default recipe trains on
    assert [p.num_objects for p in prompts] == [1, 1, 2, 2, 1, 1, 2, 2]
    assert [p.kind for p in prompts[:2]] == ["detailed", "short"]
    assert not any(w in p.text.lower().split() for p in prompts for w in HELD_OUT_WORDS)
    with pytest.raises(ValueError, match="give only"):
        pool_adherence.pool_prompts(8, pool_size=3)


def test_tradeoff_plot_draws_from_the_reports(tmp_path):
    """scripts/tradeoff_plot.py reads the four report kinds in the shapes their tools write and saves
    a PNG (matplotlib is optional: skipped without it)."""
    pytest.importorskip("matplotlib")
    tradeoff_plot = pytest.importorskip("tradeoff_plot")
    names = ("4x8x8", "4x16x16", "4x32x32")

    def write(name, obj):
        (tmp_path / name).write_text(json.dumps(obj))
        return str(tmp_path / name)

    vae = write("vae.json", {"clips": {"count": 2, "size": [64, 64, 17]}, "autoencoders": [
        {"compression": f"{n}, 16 ch", "psnr": 30.0 + i, "judge_pass": 1.0} for i, n in enumerate(names)]})
    latency = write("lat.json", {"dit_preset": "dit-t", "steps": 1, "guidance": 4.0, "threads": 1, "rows": [
        {"autoencoder": n, "size": "64x64", "tokens": 20, "text_encode": 0.01, "denoise": 0.1, "decode": 0.05}
        for n in names]})
    tput = write("tp.json", {"dit_depth": 2, "batch": 2, "threads": 1, "rows": [
        {"autoencoder": n, "size": 64, "samples_per_s_cached": 3.0, "samples_per_s_uncached": 1.0} for n in names]})
    attrs = ("colour", "shape", "size", "motion", "background", "count")
    studies = [write(f"s{n}.json", {"model": f"runs/study/ae-f{n.split('x')[1]}t4-128-export", "adherence": {
        "rate": 0.1, "by_attribute": {a: {"rate": 0.5} for a in attrs}}}) for n in names]
    out = tmp_path / "plot.png"
    argv = ["--vae", vae, "--latency", latency, "--throughput", tput, "--out", str(out)]
    for s in studies:
        argv += ["--study", s]
    assert tradeoff_plot.main(argv) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_val_loss_pairs_models_on_the_same_inputs(tmp_path, capsys):
    """scripts/val_loss.py: a model against itself differs by exactly 0 (same clips, noise, times);
    a re-patched copy (1x1x1) runs on the same latents; another autoencoder is refused."""
    import shutil

    import torch

    from kinema.models.dit import DiT
    from kinema.pipelines.pipeline import load_dit, save_dit
    from kinema.train.grow import init_from_model

    val_loss = pytest.importorskip("val_loss")
    shipped = ROOT / "kinema" / "weights" / "default"
    old = load_dit(shipped / "dit").cfg
    p1 = DiT(type(old)(**{**old.__dict__, "patch_size": (1, 1, 1), "rope_scale": (1.0, 0.5, 0.5)}))
    init_from_model(p1, shipped)
    save_dit(p1, p1.cfg, tmp_path / "p1")
    out = tmp_path / "v.json"
    args = ["--clips", "4", "--times", "2", "--threads", "1", "--batch", "4", "--json", str(out)]
    assert val_loss.main([str(shipped), str(shipped), str(tmp_path / "p1"), *args]) == 0
    rows = json.loads(out.read_text())
    assert [r["patch"] for r in rows] == [[1, 2, 2], [1, 2, 2], [1, 1, 1]]
    assert rows[1]["loss"] == rows[0]["loss"] and rows[1]["vs_first"]["diff"] == 0.0
    assert len(rows[0]["loss_by_t"]) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert rows[2]["loss"] > rows[0]["loss"]  # untrained at the new patch
    other = tmp_path / "other"
    shutil.copytree(shipped, other)
    cfg = json.loads((other / "vae" / "config.json").read_text())
    (other / "vae" / "config.json").write_text(json.dumps({**cfg, "scaling_factor": 1.0}))
    assert val_loss.main([str(shipped), str(other), *args]) == 2


def test_binding_loss_swaps_attributes_between_the_two_objects(tmp_path):
    """scripts/binding_loss.py: each swap exchanges exactly its fields between the two objects;
    a model whose output ignores the caption (a fresh DiT: zero output) pays exactly 0 for every
    variant, the shipped one pays for losing its caption."""
    from kinema.models.dit import DiT
    from kinema.pipelines.pipeline import load_dit, save_dit

    binding_loss = pytest.importorskip("binding_loss")
    frames, texts = binding_loss.binding_set(3, seed=11)
    assert len(frames) == 3 and all(len(v) == 3 for v in texts.values())
    for k in binding_loss.SWAPS:
        assert all(a != b for a, b in zip(texts["true"], texts[k]))  # every swap changes the words' order
    shipped = ROOT / "kinema" / "weights" / "default"
    blank = DiT(load_dit(shipped / "dit").cfg)
    save_dit(blank, blank.cfg, tmp_path / "blank")
    out = tmp_path / "b.json"
    args = ["--clips", "2", "--times", "2", "--threads", "1", "--json", str(out)]
    assert binding_loss.main([str(shipped), str(tmp_path / "blank"), *args]) == 0
    shipped_row, blank_row = json.loads(out.read_text())
    assert all(blank_row[f"cost_{k}"] == 0.0 for k in binding_loss.VARIANTS[1:])
    assert blank_row["binding_motion"] is None
    assert shipped_row["cost_empty"] > 0 and shipped_row["cost_other"] > 0


def test_swapped_scene_exchanges_only_the_named_fields():
    binding_loss = pytest.importorskip("binding_loss")
    from kinema.world.scene import sample_scene

    scene = next(s for s in (sample_scene(i) for i in range(100)) if len(s.objects) == 2)
    a, b = scene.objects
    a2, b2 = binding_loss.swapped(scene, ("motion", "speed")).objects
    assert (a2.motion, a2.speed, b2.motion, b2.speed) == (b.motion, b.speed, a.motion, a.speed)
    assert (a2.colour, a2.centroid, b2.shape) == (a.colour, a.centroid, b.shape)
    a3, b3 = binding_loss.wrong_motions(scene).objects
    assert {a3.motion, b3.motion}.isdisjoint({a.motion, b.motion}) and (a3.colour, b3.shape) == (a.colour, b.shape)


def test_train_step_benchmark_counts_fewer_ops_now(capsys):
    train_step = pytest.importorskip("train_step")
    assert train_step.main(["--batch", "2", "--runs", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    before, now = (int(line.split(":")[1].split()[0]) for line in lines[1:3])
    assert now < before - 500  # fused AdamW and foreach EMA: ~3,100 fewer ops on the default DiT


def test_autoguidance_reduces_to_cfg_and_to_nothing_with_the_model_as_guide():
    """scripts/tune_sampling.py's Autoguided: with autoguidance 1 it is classifier-free guidance; with
    the model as its own guide the autoguidance term is exactly zero; a weaker guide changes v."""
    import torch

    from kinema import flow

    tune = pytest.importorskip("tune_sampling")
    from test_dit import inputs, perturbed, tiny

    model, weaker = perturbed(tiny()), perturbed(tiny(), seed=1)
    x, t, text, mask = inputs(tiny())
    xx, tt, cc, mm = torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, torch.zeros_like(text)]), torch.cat([mask, mask])
    with torch.no_grad():
        v_cond, v_uncond = model(xx, tt, cc, mm).chunk(2)
        cfg = flow.cfg_combine(v_cond, v_uncond, 4.0)
        for guide, ag in ((weaker, 1.0), (model, 3.0)):
            out = tune.Autoguided(model, guide, 4.0, ag)(xx, tt, cc, mm)
            torch.testing.assert_close(flow.cfg_combine(*out.chunk(2), tune.Autoguided.PASS_THROUGH), cfg)
        pure = tune.Autoguided(model, weaker, 1.0, 3.0)(xx, tt, cc, mm).chunk(2)[0]
        torch.testing.assert_close(pure, v_cond + 2.0 * (v_cond - weaker(x, t, text, mask)))
        # a guidance interval: the scale inside [lo, hi], the third value (default 1: none) outside
        for level, interval, scale in ((0.9, (0.5, 1.0), 4.0), (0.2, (0.5, 1.0), 1.0), (0.2, (0.5, 1.0, 2.0), 2.0)):
            tl = torch.full_like(tt, level)
            vc, vu = model(xx, tl, cc, mm).chunk(2)
            out = tune.Autoguided(model, None, 4.0, 1.0, interval)(xx, tl, cc, mm).chunk(2)[0]
            torch.testing.assert_close(out, vc + (scale - 1.0) * (vc - vu))


def test_skip_block_guide_shares_weights_and_skips_exactly_the_named_blocks():
    """tune_sampling.skip_blocks (STG-R): the guide runs the model's own blocks minus the skipped
    ones, the model keeps all of its blocks, and skipping none computes the model."""
    import torch

    tune = pytest.importorskip("tune_sampling")
    from test_dit import inputs, perturbed, tiny

    model = perturbed(tiny())
    n = len(model.blocks)
    x, t, text, mask = inputs(tiny())
    with torch.no_grad():
        torch.testing.assert_close(tune.skip_blocks(model, set())(x, t, text, mask), model(x, t, text, mask))
        guide = tune.skip_blocks(model, {0})
        assert len(guide.blocks) == n - 1 and len(model.blocks) == n and guide.blocks[0] is model.blocks[1]
        assert not torch.allclose(guide(x, t, text, mask), model(x, t, text, mask))
    with pytest.raises(ValueError, match="no block"):
        tune.skip_blocks(model, {n})


def test_caption_vocab_writes_the_pool_words_of_a_config(tmp_path, capsys):
    """scripts/caption_vocab.py counts the words of the config's pool captions into a model folder,
    held-out wording excluded as the config says."""
    import caption_vocab

    from kinema.text.refine import load_vocabulary
    from kinema.world.vocab import HELD_OUT_WORDS

    (tmp_path / "model_index.json").write_text("{}")
    assert caption_vocab.main([str(ROOT / "configs" / "default-gpu.toml"), str(tmp_path),
                               "--set", "data.num_clips=40", "--set", "data.workers=0"]) == 0
    words = load_vocabulary(tmp_path)
    assert json.loads(capsys.readouterr().out)["words"] == len(words)
    assert {"a", "background", "red"} <= set(words) and not set(words) & set(HELD_OUT_WORDS)
    with pytest.raises(SystemExit, match="not a model folder"):
        caption_vocab.main([str(ROOT / "configs" / "default-gpu.toml"), str(tmp_path / "none")])


def test_composed_sampling_at_weight_zero_is_the_pipeline_and_object_prompts_use_trained_words():
    import compose_objects

    from kinema.pipelines import KinemaPipeline
    from kinema.world.parse import parse_prompt

    prompt = "A small purple square falling and bouncing as a big orange triangle moving left; the background is gray"
    claims = parse_prompt(prompt)
    assert [compose_objects.object_prompt(o, claims.background) for o in claims.objects] == [
        "a small purple square bouncing on a gray background", "a big orange triangle moving left on a gray background"]
    pipe = KinemaPipeline.from_pretrained()
    pipe.defaults.num_inference_steps = 3
    plain = pipe(prompt, generator=torch.Generator().manual_seed(7), output_type="uint8", progress=False,
                 binding_guidance=0.0, num_candidates=1).frames[0]  # the script composes on plain CFG, one video
    assert (compose_objects.composed_video(pipe, prompt, 7, 0.0) == plain).all()
    assert not (compose_objects.composed_video(pipe, prompt, 7, 1.0) == plain).all()
    # regional prompting: switched off (T > 1) it is the pipeline; on, each object prompt owns a half
    assert (compose_objects.regional_video(pipe, prompt, 7, 2.0, 0.0) == plain).all()
    assert not (compose_objects.regional_video(pipe, prompt, 7, 0.5, 0.0) == plain).all()
    with pytest.raises(ValueError, match="has 1"):
        compose_objects.regional_video(pipe, "a red circle moving left", 7, 0.5, 0.0)


def test_refine_dev_leaves_one_trained_word_out_and_judges_rewrites_by_the_parser(tmp_path, capsys):
    """scripts/refine_dev.py: dev words are trained synonyms (never held-out words), its captions use
    the word and no held-out wording, and a rewrite counts as right only when the parser reads the
    same claims (real MiniLM: "little" is rewritten to "small" in every caption)."""
    import refine_dev
    from kinema.text.refine import load_vocabulary
    from kinema.world.vocab import HELD_OUT_WORDS

    shipped = ROOT / "kinema" / "weights" / "default"
    words = refine_dev.dev_words(set(load_vocabulary(shipped)))
    assert {"ball", "little", "moving", "fast"} <= set(words) and not set(words) & set(HELD_OUT_WORDS)
    assert "triangle" not in words and "gray" not in words  # no trained synonym of one word
    for text in refine_dev.dev_prompts("dot", 3):
        said = text.lower()
        assert "dot" in said and not any(f" {w} " in f" {said} " for w in HELD_OUT_WORDS)
    assert refine_dev.claims("A small red ball rising.") == refine_dev.claims("A little red circle rising.")
    assert refine_dev.claims("A small red ball rising.") != refine_dev.claims("A small red ball sinking.")
    out = tmp_path / "dev.json"
    assert refine_dev.main([str(shipped), "--captions", "2", "--words", "little", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["word"], r["to"], r["outcome"]) for r in rows] == [("little", "small", "right")] * 2
    assert "right 2 (100.0 %)" in capsys.readouterr().out
    # --encoder: another encoder refines (here MiniLM named explicitly: the same rewrites)
    assert refine_dev.main([str(shipped), "--captions", "2", "--words", "little", "--encoder", "minilm",
                            "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == rows
    # WordNet keeps the encoder from taking the opposite: leftward -> left, not rightward
    for flags, expected in (([], ("left", "right")), (["--no-lexicon"], ("rightward", "wrong"))):
        assert refine_dev.main([str(shipped), "--captions", "2", "--words", "leftward", "--json", str(out)] + flags) == 0
        assert [(r["to"], r["outcome"]) for r in json.loads(out.read_text())] == [expected] * 2
    # a word WordNet's first definition names ("a very small circular shape"): dot -> circle; not with 0 senses
    for flags, expected in (([], ("circle", "right")), (["--gloss-senses", "0"], (None, "kept"))):
        assert refine_dev.main([str(shipped), "--captions", "2", "--words", "dot", "--json", str(out)] + flags) == 0
        assert [(r["to"], r["outcome"]) for r in json.loads(out.read_text())] == [expected] * 2
    with pytest.raises(SystemExit):
        refine_dev.main([str(shipped), "--words", "disc"])


def test_motion_probe_prompts_clips_and_reversals(capsys):
    """scripts/motion_probe.py: its prompts are one-object captions whose object makes the motion
    (no held-out wording), the world clips they describe pass every check and never turn back,
    and a turn one way then the other is a reversal."""
    motion_probe = pytest.importorskip("motion_probe")
    from kinema.eval.judge import judge
    from kinema.world.parse import parse_prompt
    from kinema.world.vocab import HELD_OUT_WORDS

    prompts, clips = motion_probe.probe_set("spinning", 3)
    for p in prompts:
        claims = parse_prompt(p)
        assert [o.motion for o in claims.objects] == ["spinning"]
        assert not any(f" {w} " in f" {p.lower()} " for w in HELD_OUT_WORDS)
    assert all(judge(f, p).passed for f, p in zip(clips, prompts))
    curves = [motion_probe.turn_curve(f) for f in clips]
    assert all(len(c) == 4 and abs(c[-1]) >= 90 and not motion_probe.reverses(c) for c in curves)
    assert motion_probe.reverses([40.0, 10.0, 60.0, 90.0])  # +40, -30, ...
    assert not motion_probe.reverses([40.0, 45.0, 90.0, 130.0]) and not motion_probe.reverses(None)
    r = motion_probe.score(clips, prompts, "spinning")
    assert (r["pass"], r["motion"], r["reversals"], r["n"]) == (3, 3, 0, 3)
    with pytest.raises(SystemExit):
        motion_probe.probe_set("hovering", 2)
    shipped = ROOT / "kinema" / "weights" / "default"
    assert motion_probe.main([str(shipped), "--prompts", "2", "--motion", "growing"]) == 0
    out = capsys.readouterr().out
    assert "2 one-object prompts, growing" in out and "world clips" in out and str(shipped) in out


def test_self_rerank_candidate_zero_is_the_eval_video_and_scores_are_the_flow_loss(tmp_path, capsys):
    """scripts/self_rerank.py: candidate 0 of a prompt is the video `kinema eval` makes (its seed),
    and a candidate's score is the flow loss of its own latent, computed by hand here."""
    import self_rerank

    from kinema import flow
    from kinema.eval.suite import suite_prompts, video_seed
    from kinema.pipelines import KinemaPipeline

    out = tmp_path / "rerank.json"
    assert self_rerank.main(["--prompts", "1", "--candidates", "2", "--levels", "2", "--threads", "1",
                             "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["id"], r["candidate"], r["seed"]) for r in rows] == [(200, 0, video_seed(200, 0)), (200, 1, video_seed(200, 1))]
    assert "best by L_u - L_c" in capsys.readouterr().out
    pipe = KinemaPipeline.from_pretrained()
    p = suite_prompts("shapes-v1-trained", 201)[200]
    latents = []
    decode = pipe.vae.decode
    pipe.vae.decode = lambda z: (latents.append(z), decode(z))[1]
    pipe(p.text, generator=torch.Generator().manual_seed(video_seed(200, 0)), progress=False, num_candidates=1)
    z = pipe.vae.normalize(latents[0])
    noise = torch.randn((2, *z.shape[1:]), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.25, 0.75])
    x = flow.interpolate(z.expand_as(noise), noise, t)
    text, mask = pipe.text_encoder.encode([pipe.refine([p.text])[0]] * 2)
    with torch.no_grad():
        err = ((pipe.dit(x, t, text, mask) - flow.velocity_target(z.expand_as(noise), noise)) ** 2).flatten(1).mean(1)
    assert rows[0]["scores"]["cond"] == pytest.approx(err.tolist(), rel=1e-4)
    # --summarize reprints the table from the JSON alone
    assert self_rerank.main(["--summarize", str(out), "--candidates", "2"]) == 0
    assert "(1 prompts, 2 candidates): candidate 0" in capsys.readouterr().out


def test_verifier_probe_negatives_differ_in_one_attribute_and_the_pipeline_is_left_as_it_was():
    """scripts/verifier_probe.py: a hard negative describes the same scene with one attribute changed
    (or swapped between two objects), never the scene itself; a tiny run trains, checks and reranks,
    and leaves the pipeline's decoder as it found it."""
    import random

    import verifier_probe

    from kinema.pipelines import KinemaPipeline
    from kinema.world import make_clip
    from kinema.world.parse import parse_prompt

    clip = make_clip(verifier_probe.VERIFIER_SEED + 1, num_objects=2)
    truth = parse_prompt(clip.text)
    negatives = verifier_probe.hard_negatives(clip.scene, random.Random(0))
    assert negatives and all(parse_prompt(n) != truth for n in negatives)
    pipe = KinemaPipeline.from_pretrained()
    decode = pipe.vae.decode
    model = verifier_probe.train(pipe, clips=4, steps=2, batch=2, log=lambda s: None)
    wins, pairs = verifier_probe.held_out_accuracy(model, pipe, 2)
    assert 0 <= wins <= pairs > 0
    pipe.defaults.num_inference_steps = 2
    r = verifier_probe.rerank(model, pipe, 200, 1, 2)
    assert r["prompts"] == 1 and r["oracle"] >= r["verifier"] >= 0 and pipe.vae.decode == decode


def test_raft_collects_the_passing_videos_latents_of_pool_captions(tmp_path, monkeypatch):
    """scripts/raft.py: captions of the training pool in the asked two-object share, never a held-out
    word; collect keeps exactly the latents of the videos the judge passed, which `mix_latents` reads."""
    import raft

    from kinema.eval.judge import judge
    from kinema.pipelines import KinemaPipeline
    from kinema.train.mix import MixedLatents
    from kinema.world.vocab import HELD_OUT_WORDS

    rows = raft.pool_captions("configs/default-refiner.toml", 6, 0.5)
    assert [r["objects"] for r in rows].count(2) == 3 and [r["index"] for r in rows] == sorted({r["index"] for r in rows})
    assert not {w for r in rows for w in r["text"].lower().replace(",", " ").replace(".", " ").split()} & set(HELD_OUT_WORDS)
    pipe = KinemaPipeline.from_pretrained()
    pipe.defaults.num_inference_steps = 2
    done, latents = raft.collect(pipe, rows[:3], batch=2, seed=0)
    assert len(latents) == sum(r["passed"] for r in done)
    again = pipe([r["text"] for r in rows[:2]], generator=torch.Generator().manual_seed(rows[0]["index"]),
                 output_type="uint8", progress=False, num_candidates=1)  # the first batch, remade
    assert [judge(f, r["text"]).passed for f, r in zip(again.frames, rows)] == [r["passed"] for r in done[:2]]
    kept = [z for z, r in zip(again.latents, done) if r["passed"]]
    assert all(torch.equal(a, b.to(torch.float16)) for a, b in zip(latents, kept))
    monkeypatch.setattr(KinemaPipeline, "from_pretrained", classmethod(lambda cls, model=None: pipe))
    assert raft.main(["collect", "--clips", "2", "--batch", "2", "--threads", "1", "--out", str(tmp_path / "s")]) == 0
    info = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert info["summary"]["videos"] == 2 and len(info["rows"]) == 2
    if info["captions"]:
        assert len(MixedLatents(tmp_path / "s", 0.5)) == len(info["captions"])


def test_raft_failures_are_the_world_clips_latents_of_the_failed_captions(tmp_path):
    """scripts/raft.py failures: the failed rows of a collect folder, with their pool clips' cached
    latents; a clip missing from the cache is an error that names `kinema train latents`."""
    import raft

    from kinema.autoencoder import CausalVideoVAE
    from kinema.data.synth import clip_seed
    from kinema.train.latent_cache import LatentCache
    from kinema.train.mix import MixedLatents

    config = tmp_path / "raft.toml"
    text = (ROOT / "configs" / "default-raft.toml").read_text()
    config.write_text(text.replace('latent_cache_dir = "runs/cache/latents"', f'latent_cache_dir = "{tmp_path / "cache"}"'))
    rows = [{"index": i, "objects": 1, "text": f"caption {i}", "passed": i == 1} for i in range(3)]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "samples.json").write_text(json.dumps({"rows": rows, "captions": ["caption 1"]}))
    cache = LatentCache(CausalVideoVAE.from_pretrained(ROOT / "kinema" / "weights" / "default" / "vae"), tmp_path / "cache")
    z = {i: torch.randn(16, 5, 8, 8, generator=torch.Generator().manual_seed(i)) for i in (0, 2)}
    cache[("world", clip_seed(0, 0), 17, 64, 64)] = z[0]
    with pytest.raises(SystemExit, match="1 of 2 failed clips .*kinema train latents"):
        raft.failed_clips(str(tmp_path / "s"), str(config))
    cache[("world", clip_seed(0, 2), 17, 64, 64)] = z[2]
    assert raft.main(["failures", str(tmp_path / "s"), "--config", str(config), "--out", str(tmp_path / "f")]) == 0
    mix = MixedLatents(tmp_path / "f", 1.0)
    assert mix.captions == ["caption 0", "caption 2"]
    assert torch.equal(mix.latents, torch.stack([z[0], z[2]]).half().float())


def test_attention_probe_reads_object_words_at_their_object(tmp_path):
    """scripts/attention_probe.py: a DiT that reads the caption evenly (cross-attention queries
    zeroed: uniform maps) scores its region's share of tokens; the shipped one reads each object's
    words more at that object than that."""
    from kinema.pipelines.pipeline import load_dit, save_dit

    attention_probe = pytest.importorskip("attention_probe")
    shipped = ROOT / "kinema" / "weights" / "default"
    even = load_dit(shipped / "dit")
    for block in even.blocks:
        torch.nn.init.zeros_(block.cross.q.weight)
        torch.nn.init.zeros_(block.cross.q.bias)
    save_dit(even, even.cfg, tmp_path / "even")
    out = tmp_path / "a.json"
    assert attention_probe.main([str(shipped), str(tmp_path / "even"), "--clips", "4", "--at", "0.2",
                                 "--threads", "1", "--json", str(out)]) == 0
    shipped_row, even_row = json.loads(out.read_text())
    assert 0 < even_row["chance"] < 0.5
    assert abs(even_row["t=0.2"]["own"] - even_row["chance"]) < 0.1
    assert shipped_row["t=0.2"]["own"] > even_row["t=0.2"]["own"] + 0.05
    for row in (shipped_row, even_row):
        assert 0 <= row["t=0.2"]["other"] and row["t=0.2"]["own"] + row["t=0.2"]["other"] <= 1 + 1e-6


def test_sdedit_probe_from_pure_noise_is_the_pipeline_and_from_zero_the_autoencoder():
    """scripts/sdedit_probe.py: t0 = 1 makes exactly the pipeline's video of the prompt's first
    seed; t0 = 0 is the autoencoder's reconstruction of the prompt's world clip."""
    from kinema.data.loader import from_model_range, to_model_range
    from kinema.eval.suite import real_clips, suite_prompts, video_seed
    from kinema.pipelines import KinemaPipeline

    sdedit_probe = pytest.importorskip("sdedit_probe")
    pipe = KinemaPipeline.from_pretrained()
    prompts = suite_prompts("shapes-v1-trained", 202)[200:]
    assert pipe.defaults.eta > 0  # the shipped sampler is stochastic: one prompt at a time, each its own stream
    videos = sdedit_probe.from_clips(pipe, prompts, [1.0, 0.0], batch=2)
    euler = sdedit_probe.from_clips(pipe, prompts, [1.0], batch=2, eta=0.0)  # deterministic: batched
    for p, video, det in zip(prompts, videos[1.0], euler[1.0]):
        own = pipe(p.text, generator=torch.Generator().manual_seed(video_seed(p.id, 0)), output_type="uint8",
                   progress=False, num_candidates=1).frames[0]
        assert np.abs(video.astype(int) - np.asarray(own).astype(int)).max() <= 1  # rounding
        own = pipe(p.text, generator=torch.Generator().manual_seed(video_seed(p.id, 0)), output_type="uint8",
                   progress=False, eta=0.0, num_candidates=1).frames[0]
        assert np.abs(det.astype(int) - np.asarray(own).astype(int)).max() <= 1  # batch-of-2 vs 1 rounding
    clips = real_clips(prompts, 64, 64, 17)
    with torch.no_grad():
        z = pipe.vae.normalize(pipe.vae.encode(torch.stack([to_model_range(c) for c in clips])).mode())
        again = from_model_range(pipe.vae.decode(pipe.vae.denormalize(z)))
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(videos[0.0], again))  # batch 1 vs 2


def test_train_verifier_keeps_off_the_eval_prompts_and_scores_best_of():
    import train_verifier

    with pytest.raises(SystemExit, match="test's and tuning's"):
        train_verifier.main(["sample", "none", "--first", "200", "--samples", "x.pt"])
    rows = [{"id": 1, "j": 0, "pass": False}, {"id": 1, "j": 1, "pass": True},
            {"id": 2, "j": 0, "pass": True}, {"id": 2, "j": 1, "pass": False},
            {"id": 3, "j": 0, "pass": False}, {"id": 3, "j": 1, "pass": False}]
    # picked: prompt 1's second (passes), prompt 2's second (fails), prompt 3 either (fails)
    assert train_verifier.best_of(rows, torch.tensor([0.0, 1.0, 0.0, 2.0, 5.0, 1.0])) == (1, 1, 2, 3)


def test_cached_world_clips_reads_a_latent_cache(tmp_path):
    import train_verifier
    from kinema.autoencoder import CausalVideoVAE, VAEConfig
    from kinema.train.latent_cache import LatentCache
    from kinema.world.scene import sample_scene

    vae = CausalVideoVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), norm_groups=4))
    cache = LatentCache(vae, tmp_path)
    for seed in (3, 1, 2):
        cache[("world", seed, 5, 32, 32)] = torch.full((4, 2, 4, 4), float(seed))
    cache[("world", 4, 5, 32, 32, "turning", "clockwise")] = torch.full((4, 2, 4, 4), 4.0)
    (cache.dir / "ab").mkdir(exist_ok=True)
    (cache.dir / "ab" / "broken.safetensors").write_bytes(b"not a safetensors file")  # skipped, as a lookup would
    z, scenes = train_verifier.cached_world_clips(cache)
    assert z.shape == (4, 4, 2, 4, 4)
    by_value = {int(zi[0, 0, 0, 0]): s for zi, s in zip(z, scenes)}
    assert {k: s.objects for k, s in by_value.items()} == {i: sample_scene(i, 32, 32, 5).objects for i in (1, 2, 3, 4)}
    with pytest.raises(SystemExit, match="world clips"):
        train_verifier.main(["reader", "kinema/weights/default", "--cache", str(tmp_path / "none")])


def test_render_world_clips_fills_a_cache_the_reader_stage_reads(tmp_path):
    from types import SimpleNamespace

    import train_verifier
    from kinema.autoencoder import CausalVideoVAE, VAEConfig
    from kinema.data.loader import to_model_range
    from kinema.pipelines.pipeline import PipelineDefaults
    from kinema.train.latent_cache import LatentCache
    from kinema.world.render import render
    from kinema.world.scene import sample_scene

    torch.manual_seed(0)
    vae = CausalVideoVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), norm_groups=4)).eval()
    pipe = SimpleNamespace(vae=vae, defaults=PipelineDefaults(num_frames=5, height=32, width=32))
    cache = LatentCache(vae, tmp_path)
    train_verifier.render_world_clips(pipe, cache, 3, first_seed=10, batch=2)
    fresh = LatentCache(vae, tmp_path)  # read back from disk
    z, scenes = train_verifier.cached_world_clips(fresh)
    assert z.shape == (3, 4, 2, 4, 4)
    assert sorted(map(repr, scenes)) == sorted(repr(sample_scene(seed, 32, 32, 5)) for seed in (10, 11, 12))
    with torch.no_grad():
        want = vae.normalize(vae.encode(to_model_range(render(sample_scene(11, 32, 32, 5)))[None]).mode())[0]
    assert torch.allclose(fresh[("world", 11, 5, 32, 32)].float(), want, atol=1e-4)
    encoded = []
    vae.encode = lambda x: encoded.append(len(x)) or CausalVideoVAE.encode(vae, x)
    train_verifier.render_world_clips(pipe, cache, 4, first_seed=10, batch=2)  # three are there: one to make
    assert encoded == [1]
    # near misses: keyed apart, read only by a reader of near misses, each the near miss of its seed
    from kinema.world.nearmiss import near_miss

    train_verifier.render_world_clips(pipe, cache, 2, first_seed=10, batch=2, near_miss_p=1.0)
    assert encoded == [1, 2] and ("world", 10, 5, 32, 32, train_verifier.NEAR_MISS, 1.0) in cache
    assert len(train_verifier.cached_world_clips(LatentCache(vae, tmp_path))[1]) == 4
    z, scenes = train_verifier.cached_world_clips(LatentCache(vae, tmp_path), near_misses=True)
    assert len(z) == 6 and sum(repr(s) == repr(near_miss(sample_scene(sd, 32, 32, 5), sd, 1.0))
                               for s in scenes for sd in (10, 11)) == 2
