"""The best-of-N verifier (kinema/models/verifier.py) and the pipeline's num_candidates."""
import dataclasses
import json
import zlib

import pytest
import torch

from kinema.autoencoder import CausalVideoVAE, VAEConfig
from kinema.config import ConfigError
from kinema.models.dit import DiT, DiTConfig
from kinema.models.verifier import (Verifier, VerifierConfig, dit_fingerprint, fit_verifier, load_verifier,
                                    num_features, save_verifier, verifier_features)
from kinema.pipelines import KinemaPipeline
from kinema.pipelines.pipeline import (VERIFIER_DIR, _verifier_for, export_model, load_dit, restamp_verifier,
                                      save_pipeline_folder)

TWO = "a red circle moving left and a blue square moving right"


class HashEncoder:
    """A stand-in text encoder: fixed random states per text, the empty text masked out."""
    max_length, dim = 6, 16

    def encode(self, texts):
        states = torch.stack([torch.randn(self.max_length, self.dim, generator=torch.Generator().manual_seed(
            zlib.crc32(t.encode()))) for t in texts])
        mask = torch.tensor([[bool(t)] * self.max_length for t in texts])
        return states, mask


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    vae = CausalVideoVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), norm_groups=4))
    dit = DiT(DiTConfig(in_channels=4, patch_size=(1, 2, 2), hidden_size=32, depth=2, num_heads=2, text_dim=16))
    with torch.no_grad():  # adaLN-Zero starts as the identity: make the blocks and the output layer do something
        for p in dit.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return vae, dit


def features(dit, z, prompts, cfg):
    return verifier_features(dit, HashEncoder().encode, z, prompts, prompts, cfg)


def test_config_checks_levels_and_rejects_unknown_keys():
    with pytest.raises(ValueError, match="noise levels"):
        VerifierConfig(levels=[0.0, 0.5])
    with pytest.raises(ValueError, match="l2"):
        VerifierConfig(l2=-1)
    from kinema.config import from_dict
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(VerifierConfig, {"levls": [0.5]})


def test_features_have_their_size_and_do_not_depend_on_the_batch(parts):
    _, dit = parts
    z = torch.randn(3, 4, 2, 4, 4)
    cfg = VerifierConfig(levels=[0.2, 0.8])
    f = features(dit, z, ["a", "b", "c"], cfg)
    assert f.shape == (3, num_features(cfg, 32)) == (3, 2 * (4 + 3 * 32))
    assert torch.allclose(features(dit, z[1:2], ["b"], cfg), f[1:2], atol=1e-5)  # a candidate alone or in a batch
    assert not torch.allclose(features(dit, z[1:2], ["c"], cfg), f[1:2])  # the prompt matters
    losses_only = features(dit, z, ["a", "b", "c"], dataclasses.replace(cfg, hidden=False))
    assert torch.equal(losses_only, f[:, :8])
    # L_s - L_c is 0 when the "swap" is the prompt itself
    assert torch.allclose(f[:, 6:8], torch.zeros(3, 2), atol=1e-6)


def test_a_prompt_with_no_swap_reads_the_same_beside_one_with_a_swap(parts):
    """With no prompt to swap the DiT runs two branches (L_s is L_c); beside a prompt that has a
    swap it runs three: the no-swap prompt's features must not tell the two apart."""
    _, dit = parts
    from kinema.world.parse import swap_objects
    one, z = "a red circle moving left", torch.randn(2, 4, 2, 4, 4)
    cfg = VerifierConfig(levels=[0.2, 0.8])
    swapped = [swap_objects(p) or p for p in (one, TWO)]
    assert swapped[0] == one and swapped[1] != TWO
    mixed = verifier_features(dit, HashEncoder().encode, z, [one, TWO], swapped, cfg)
    alone = verifier_features(dit, HashEncoder().encode, z[:1], [one], [one], cfg)
    torch.testing.assert_close(alone, mixed[:1], atol=1e-5, rtol=1e-5)
    assert float(mixed[1, 6:8].abs().sum()) > 0  # the two-object prompt's L_s - L_c is read, not 0


def test_fit_learns_a_separable_rule_and_refuses_one_label():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 20, generator=g) * torch.linspace(0.1, 10, 20)  # unequal scales: standardised
    w = torch.randn(20, generator=g)
    y = (X / torch.linspace(0.1, 10, 20)) @ w > 0
    model = fit_verifier(X[:300], y[:300], VerifierConfig(l2=0.01))
    accuracy = ((model(X[300:]) > 0) == y[300:]).float().mean()
    assert accuracy > 0.9
    with pytest.raises(ValueError, match="same label"):
        fit_verifier(X[:10], torch.ones(10, dtype=torch.bool), VerifierConfig())


def test_save_and_load_give_the_same_scores(tmp_path):
    model = Verifier(VerifierConfig(levels=[0.5], dit_sha256="abc"), 5)
    with torch.no_grad():
        model.head.weight.normal_()
        model.mean.normal_()
    save_verifier(model, tmp_path / "v")
    again = load_verifier(tmp_path / "v")
    x = torch.randn(7, 5)
    assert again.cfg == model.cfg and torch.equal(again(x), model(x))


def test_fingerprint_follows_the_weights_not_their_file_dtype(parts):
    _, dit = parts
    half = DiT(dit.cfg)
    half.load_state_dict({k: v.half().float() for k, v in dit.state_dict().items()})
    again = DiT(dit.cfg)
    again.load_state_dict(half.state_dict())
    assert dit_fingerprint(half) == dit_fingerprint(again) != dit_fingerprint(dit)


def fitted_for(dit, cfg=None):
    """A verifier for `dit` that scores a candidate by its -L_c at the first level (any fixed rule does)."""
    cfg = cfg or VerifierConfig(levels=[0.3, 0.7], dit_sha256=dit_fingerprint(dit))
    model = Verifier(cfg, num_features(cfg, dit.cfg.hidden_size))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[0, 0] = -1.0
    return model


def test_pipeline_returns_the_candidate_the_verifier_scores_highest(parts):
    vae, dit = parts
    pipe = KinemaPipeline(vae, dit, HashEncoder(), verifier=fitted_for(dit))
    kw = dict(num_frames=5, height=32, width=32, num_inference_steps=2, progress=False)
    out = pipe(["a red ball", TWO], num_candidates=3, generator=torch.Generator().manual_seed(0), **kw)
    assert len(out.frames) == 2 and out.scores.shape == (2, 3) and out.latents.shape[0] == 2
    # the returned latents score what the best candidate scored
    again = pipe.verifier(verifier_features(dit, HashEncoder().encode, out.latents, out.prompts,
                                            [out.prompts[0], "a blue square moving left and a red circle moving right"],
                                            pipe.verifier.cfg))
    assert torch.allclose(again, out.scores.max(1).values, atol=1e-4)
    # one candidate is the pipeline as it was: no scores, the same video as a pipeline without a verifier
    plain = KinemaPipeline(vae, dit, HashEncoder())
    one = pipe("a red ball", num_candidates=1, generator=torch.Generator().manual_seed(0), **kw)
    assert one.scores is None
    assert (one.frames[0] == plain("a red ball", generator=torch.Generator().manual_seed(0), **kw).frames[0]).all()
    # the default: the model's num_candidates, 1 without a verifier
    five = KinemaPipeline(vae, dit, HashEncoder(), dataclasses.replace(pipe.defaults, num_candidates=5), verifier=pipe.verifier)
    assert five("a red ball", **kw).scores.shape == (1, 5)
    assert KinemaPipeline(vae, dit, HashEncoder(), five.defaults).default_candidates == 1


def test_num_candidates_errors(parts):
    vae, dit = parts
    with pytest.raises(ValueError, match="needs a verifier"):
        KinemaPipeline(vae, dit, HashEncoder())("a red ball", num_candidates=2, progress=False)
    with pytest.raises(ValueError, match=">= 1"):
        KinemaPipeline(vae, dit, HashEncoder(), verifier=fitted_for(dit))("a red ball", num_candidates=0)


def test_reader_guidance_pushes_the_samples_toward_the_prompts_claims(parts):
    from kinema.models.reader import ReaderConfig, SceneReader, claim_log_prob

    vae, dit = parts
    torch.manual_seed(1)
    reader = SceneReader(ReaderConfig(latent_channels=4, grid=(2, 4, 4), dim=32, layers=1, heads=2)).eval()
    cfg = VerifierConfig(levels=[0.5], reader=True, dit_sha256=dit_fingerprint(dit))
    verifier = Verifier(cfg, num_features(cfg, dit.cfg.hidden_size), reader)
    pipe = KinemaPipeline(vae, dit, HashEncoder(), verifier=verifier)
    kw = dict(num_frames=5, height=32, width=32, num_inference_steps=4, progress=False, num_candidates=1)
    prompts = ["a red square moving left", TWO, "hello there"]  # the last: nothing the world's parser reads
    run = lambda s: pipe(prompts, generator=torch.Generator().manual_seed(0), reader_guidance=s, **kw)  # noqa: E731
    off, on = run(0.0), run(3.0)
    assert torch.equal(off.latents, pipe(prompts, generator=torch.Generator().manual_seed(0), **kw).latents)  # default off
    assert torch.equal(on.latents[2], off.latents[2])  # no claims: no push
    with torch.no_grad():
        before, after = claim_log_prob(reader, off.latents, off.prompts), claim_log_prob(reader, on.latents, on.prompts)
    assert (after[:2] > before[:2]).all()
    # through the DiT: the reader's gradient at the clean estimate, carried back to x_t
    pipe.defaults = dataclasses.replace(pipe.defaults, reader_guidance_mode="through")
    through = run(3.0)
    with torch.no_grad():
        assert (claim_log_prob(reader, through.latents, through.prompts)[:2] > before[:2]).all()
    # (to fp32 rounding: under autograd the DiT's GELU is F.gelu's kernel, not the sampling one)
    torch.testing.assert_close(through.latents[2], off.latents[2], atol=1e-5, rtol=0)
    # a noisy reader as the guide: it reads x_t itself, and takes over from the verifier's
    noisy = SceneReader(dataclasses.replace(reader.cfg, noisy=True)).eval()
    guided = KinemaPipeline(vae, dit, HashEncoder(), verifier=verifier, guide=noisy)
    assert guided.guide_reader is noisy and pipe.guide_reader is reader
    big = guided(prompts, generator=torch.Generator().manual_seed(0), reader_guidance=3.0, **kw)
    with torch.no_grad():
        t = torch.zeros(3)
        assert (claim_log_prob(noisy, big.latents, big.prompts, t)[:2]
                > claim_log_prob(noisy, off.latents, off.prompts, t)[:2]).all()
    with pytest.raises(ValueError, match=">= 0"):
        run(-1.0)
    with pytest.raises(ValueError, match="scene reader"):
        KinemaPipeline(vae, dit, HashEncoder(), verifier=fitted_for(dit))("a red ball", reader_guidance=1.0, **kw)


def test_steering_resamples_each_prompts_candidates_at_its_noise_levels(parts, monkeypatch):
    from kinema import flow
    from kinema.models.reader import ReaderConfig, SceneReader

    vae, dit = parts
    torch.manual_seed(2)
    noisy = SceneReader(ReaderConfig(latent_channels=4, grid=(2, 4, 4), dim=32, layers=1, heads=2, noisy=True)).eval()
    kw = dict(num_frames=5, height=32, width=32, num_inference_steps=4, progress=False, num_candidates=3)
    prompts = ["a red square moving left", TWO]
    plain = KinemaPipeline(vae, dit, HashEncoder(), verifier=fitted_for(dit), guide=noisy)
    steered = KinemaPipeline(vae, dit, HashEncoder(), dataclasses.replace(plain.defaults, steer_times=(0.6, 0.3)),
                             verifier=plain.verifier, guide=noisy)
    calls = []
    resample = flow.resample_particles
    monkeypatch.setattr(flow, "resample_particles", lambda x, lw, groups, g: calls.append((len(x), groups)) or
                        resample(x, lw, groups, g))
    base = plain(prompts, generator=torch.Generator().manual_seed(0), **kw)
    assert calls == []  # no steer_times: the pipeline as it was
    out = steered(prompts, generator=torch.Generator().manual_seed(0), **kw)
    assert calls == [(6, 2), (6, 2)]  # once at each level, all 2 x 3 candidates in their 2 groups
    assert out.scores.shape == (2, 3) and not torch.equal(out.latents, base.latents)
    calls.clear()
    steered(prompts, generator=torch.Generator().manual_seed(0), **{**kw, "num_candidates": 1})
    assert calls == []  # one candidate: nothing to resample
    with pytest.raises(ValueError, match="noisy scene reader"):
        KinemaPipeline(vae, dit, HashEncoder(), steered.defaults, verifier=plain.verifier)("a red ball", **kw)


def test_a_verifier_for_other_weights_is_ignored_and_not_exported(parts, tmp_path):
    vae, dit = parts
    vae.save_pretrained(tmp_path / "vae")
    folder = save_pipeline_folder(tmp_path / "model", tmp_path / "vae", dit, dit.cfg, "minilm", 6,
                                  KinemaPipeline(vae, dit, HashEncoder()).defaults)
    save_verifier(fitted_for(dit), folder / VERIFIER_DIR)
    assert _verifier_for(folder / VERIFIER_DIR, dit) is not None
    other = DiT(dit.cfg)
    with pytest.warns(UserWarning, match="another DiT"):
        assert _verifier_for(folder / VERIFIER_DIR, other) is None
    assert (export_model(folder, tmp_path / "same") / VERIFIER_DIR / "model.safetensors").is_file()
    with pytest.warns(UserWarning, match="not copied"):
        out = export_model(folder, tmp_path / "half", dtype="fp16")
    assert not (out / VERIFIER_DIR).exists()
    assert json.loads((out / "model_index.json").read_text())["dit"] == "dit"
    # keep_verifier: the same head, re-stamped for the exported (here fp16-rounded) DiT, so it is used
    kept = export_model(folder, tmp_path / "kept", dtype="fp16", keep_verifier=True)
    head, new = load_verifier(kept / VERIFIER_DIR), load_dit(kept / "dit")
    assert _verifier_for(kept / VERIFIER_DIR, new) is not None and _verifier_for(kept / VERIFIER_DIR, dit) is None
    old = load_verifier(folder / VERIFIER_DIR)
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), old.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="no verifier"):
        restamp_verifier(tmp_path / "half")


def test_picker_probe_remakes_the_candidates_the_pipeline_chooses_among(parts):
    """scripts/picker_probe.py: pipe([p] * K) with the video's generator makes the K candidates of
    pipe(p, num_candidates=K); the verifier's pick among them is the video the pipeline returns."""
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import picker_probe

    from kinema.eval.suite import video_seed

    vae, dit = parts
    pipe = KinemaPipeline(vae, dit, HashEncoder(), verifier=fitted_for(dit))
    pipe.defaults = dataclasses.replace(pipe.defaults, num_frames=5, height=32, width=32, num_inference_steps=2)
    prompt = SimpleNamespace(id=7, text=TWO)
    out = pipe(TWO, num_candidates=3, generator=torch.Generator().manual_seed(video_seed(7, 1)), progress=False)
    rows = picker_probe.candidates(pipe, prompt, 1, 3)
    assert [(r["id"], r["b"], r["k"]) for r in rows] == [(7, 1, 0), (7, 1, 1), (7, 1, 2)]
    assert all(set(r["attrs"]) >= {"count", "colour", "shape", "motion"} for r in rows)
    best = rows[int(out.scores[0].argmax())]["z"]
    assert torch.allclose(best, out.latents[0], atol=1e-5)
    # picking: the highest score's candidate, within the asked batches
    for r, ok in zip(rows, [False, True, False]):
        r["pass"] = ok
    more = [dict(r, b=2, **{"pass": True}) for r in rows]
    assert picker_probe.picked(rows, torch.tensor([3.0, 1.0, 2.0]), (1,)) == 0
    assert picker_probe.picked(rows, torch.tensor([1.0, 3.0, 2.0]), (1,)) == 1
    assert picker_probe.picked(rows + more, torch.tensor([3.0, 1.0, 2.0, 0.0, 0.0, 9.0]), (1, 2)) == 1


def test_flow_dpo_prefers_the_passing_candidates_it_was_shown(parts):
    """scripts/flow_dpo.py: every (pass, fail) pair within a prompt; a few Flow-DPO steps lower the
    DiT's flow error on the winners against its reference more than on the losers."""
    import argparse
    import copy
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import flow_dpo

    from kinema import flow

    _, dit = parts
    g = torch.Generator().manual_seed(3)
    rows = [{"id": 400 + i // 3, "read_as": [TWO, "a green triangle"][i // 3], "pass": i % 3 == 0,
             "z": torch.randn(4, 2, 4, 4, generator=g)} for i in range(6)]
    rows.append({"id": 402, "read_as": TWO, "pass": True, "z": torch.randn(4, 2, 4, 4, generator=g)})  # all pass
    pairs = flow_dpo.preference_pairs(rows)
    assert pairs == [(0, 1), (0, 2), (3, 4), (3, 5)]
    with pytest.raises(ValueError, match="evaluation prompt"):
        flow_dpo.preference_pairs([dict(rows[0], id=399)])
    assert flow_dpo.time_range("0.5:1") == (0.5, 1.0)
    with pytest.raises(argparse.ArgumentTypeError, match="lo < hi"):
        flow_dpo.time_range("0.7:0.2")
    a = SimpleNamespace(steps=40, batch=4, lr=3e-3, warmup=1, beta=200.0, sft=0.0, ema=0.0, time_shift=1.0, time_range=None,
                        bf16=False, seed=0, log_every=10)
    ref = copy.deepcopy(dit)
    tuned = flow_dpo.finetune(copy.deepcopy(dit), HashEncoder().encode, rows, pairs, a)
    w, l = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    z = torch.stack([r["z"] for r in rows])
    states, mask = HashEncoder().encode([rows[i]["read_as"] for i in w.tolist()])
    margins = []
    for seed in range(8):  # held-out noise and times
        noise = torch.randn(z[w].shape, generator=torch.Generator().manual_seed(100 + seed))
        t = torch.full((len(w),), 0.2 + 0.08 * seed)
        with torch.no_grad():
            d = [flow.flow_errors(m(flow.interpolate(z[i], noise, t), t, states, mask), z[i], noise)
                 for m in (tuned, ref) for i in (w, l)]
        margins.append(-((d[0] - d[2]) - (d[1] - d[3])))
    assert torch.stack(margins).mean() > 0
