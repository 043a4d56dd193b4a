"""`kinema train dit`: a tiny run end to end, kill + resume, DDP under torchrun, the exported model,
KinemaPipeline and `kinema generate`."""
import copy
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kinema.autoencoder import CausalVideoVAE, VAEConfig
from kinema.config import ConfigError
from kinema.data.video_io import read_video, read_video_info
from kinema.pipelines import KinemaPipeline, export_to_video
from kinema.train.config import load_dit_train_config
from kinema.train.dit import cache_pool_latents, sampling_defaults, train_dit

CONFIG = """
preset = "dit-t"
vae = "{vae}"
text_max_length = 32
batch_size = 4
steps = {steps}
log_every = 1
ckpt_every = 2
precision = "fp32"
guidance_scale = 2.0
sample_steps = 3
out_dir = "{out}"
[dit]
hidden_size = 48
depth = 2
num_heads = 2
[data]
buckets = [[5, 32, 32]]
num_clips = 8
[optim]
warmup_steps = 2
lr = 1e-3
"""


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    torch.manual_seed(0)
    vae = CausalVideoVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), norm_groups=4))
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


def write_config(tmp_path, vae_dir, name, steps=8):
    path = tmp_path / f"{name}.toml"
    path.write_text(CONFIG.format(vae=vae_dir, out=tmp_path / name, steps=steps))
    return path


def losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "log.jsonl").read_text().splitlines():  # a resumed run re-logs steps: last wins
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vae_dir):
    tmp = tmp_path_factory.mktemp("run")
    cache = json.dumps(str(tmp / "text_cache"))
    summary = train_dit(load_dit_train_config(write_config(tmp, vae_dir, "full"),
                                              [f"text_cache_dir={cache}", "preview_every=4", "preview_steps=2"]),
                        progress=False)
    return tmp, summary


def test_a_tiny_run_logs_checkpoints_and_exports(trained):
    tmp, summary = trained
    run = tmp / "full"
    assert summary["steps"] == 8 and summary["resumed_from"] == 0
    log = losses(run)
    assert sorted(log) == list(range(1, 9)) and all(np.isfinite(v) for v in log.values())
    assert (run / "checkpoints" / "latest").read_text() == "step_0000008"
    assert len(list((run / "checkpoints").glob("step_*"))) == 2  # keep_checkpoints
    assert len(list((tmp / "text_cache").rglob("*.safetensors"))) >= 8  # caption embeddings kept on disk
    previews = sorted(p.name for p in (run / "previews").iterdir())
    assert previews == ["step_0000004_0.mp4", "step_0000008_0.mp4"]
    assert read_video(run / "previews" / previews[0]).shape == (5, 32, 32, 3)
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert index["text_encoder"] == "minilm" and index["defaults"]["num_frames"] == 5
    # the training vocabulary: every word (and word pair) of the pool's captions (8 clips, both kinds), no other
    from kinema.data.loader import VideoBatches
    from kinema.text.refine import caption_pairs, caption_words, load_pairs, load_vocabulary

    cfg = load_dit_train_config(tmp / "full.toml")
    texts = VideoBatches(cfg.data, cfg.batch_size).training_captions()
    assert len(texts) == 16 and load_vocabulary(run / "model") == caption_words(texts)
    assert load_pairs(run / "model") == caption_pairs(texts)


KILLER = """
import os, signal, sys
from kinema.train.config import load_dit_train_config
from kinema.train.dit import cache_pool_latents, train_dit
def hook(step, loss):
    if step == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final checkpoint: a real crash
train_dit(load_dit_train_config(sys.argv[1]), progress=False, on_step=hook)
"""


def test_killed_run_resumes_to_the_same_losses(tmp_path, vae_dir, trained):
    cfg_path = write_config(tmp_path, vae_dir, "killed")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(cfg_path)], capture_output=True, timeout=300)
    assert proc.returncode == -9
    assert (tmp_path / "killed" / "checkpoints" / "latest").read_text() == "step_0000004"
    ckpt_ema = load_file(tmp_path / "killed" / "checkpoints" / "step_0000004" / "ema.safetensors")
    midway = load_file(tmp_path / "killed" / "model" / "dit" / "model.safetensors")  # exported at each checkpoint
    assert ckpt_ema.keys() == midway.keys() and all(torch.equal(ckpt_ema[k], midway[k]) for k in midway)
    summary = train_dit(load_dit_train_config(cfg_path), progress=False)
    assert summary["resumed_from"] == 4
    full, resumed = losses(trained[0] / "full"), losses(tmp_path / "killed")
    for step in range(5, 9):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-7), step


def test_latent_cache_on_disk_skips_the_autoencoder_and_keeps_losses(tmp_path, vae_dir, trained, monkeypatch):
    cache = json.dumps(str(tmp_path / "latents"))
    first = load_dit_train_config(write_config(tmp_path, vae_dir, "first", steps=4), [f"latent_cache_dir={cache}"])
    train_dit(first, progress=False)
    assert len(list((tmp_path / "latents").rglob("*.safetensors"))) == 8  # the pool's 8 clips, each once

    def never(*args, **kwargs):
        raise AssertionError("encoded or rendered although the latent was on disk")

    monkeypatch.setattr(CausalVideoVAE, "encode", never)
    monkeypatch.setattr("kinema.data.loader.make_clip", never)
    second = load_dit_train_config(write_config(tmp_path, vae_dir, "second", steps=4), [f"latent_cache_dir={cache}"])
    train_dit(second, progress=False)
    full = losses(trained[0] / "full")
    for run in ("first", "second"):  # captions, latents and so losses as without the cache
        for step, loss in losses(tmp_path / run).items():
            assert loss == pytest.approx(full[step], rel=1e-5, abs=1e-7), (run, step)
    with pytest.raises(ValueError, match="needs cache_latents"):
        train_dit(load_dit_train_config(write_config(tmp_path, vae_dir, "x", steps=1),
                                        [f"latent_cache_dir={cache}", "cache_latents=false"]), progress=False)


def test_a_stop_signal_saves_the_steps_done_and_resumes(tmp_path, vae_dir, trained):
    """SIGINT (Ctrl-C, `timeout`) mid-run: the step in flight finishes, a checkpoint and the model
    are saved at that step (not only at the last ckpt_every), and the same command resumes."""
    import os
    import signal

    cfg_path = write_config(tmp_path, vae_dir, "stopped")

    def hook(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):  # log_every = 2: step 3 is logged because it is the stop's
        train_dit(load_dit_train_config(cfg_path, ["log_every=2"]), progress=False, on_step=hook)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back
    run = tmp_path / "stopped"
    assert (run / "checkpoints" / "latest").read_text() == "step_0000003"  # ckpt_every = 2: a stop save
    ckpt_ema = load_file(run / "checkpoints" / "step_0000003" / "ema.safetensors")
    model = load_file(run / "model" / "dit" / "model.safetensors")
    assert all(torch.equal(ckpt_ema[k], model[k]) for k in model)
    assert sorted(losses(run)) == [2, 3]
    assert train_dit(load_dit_train_config(cfg_path), progress=False)["resumed_from"] == 3
    full, resumed = losses(trained[0] / "full"), losses(run)
    assert sorted(resumed) == [2, 3, 4, 5, 6, 7, 8]
    for step in resumed:
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-7), step


def test_stop_request_merges_a_forwarded_signal_and_a_later_one_stops_at_once(monkeypatch):
    """torchrun forwards a terminal's Ctrl-C that its workers also got: two signals at once are one
    request; a signal REPEAT_S after the first raises at once (no waiting for the step)."""
    import os
    import signal

    from kinema.train.dit import StopRequest

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # within REPEAT_S of the first: no exception
        assert stop.requested
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    monkeypatch.setattr(StopRequest, "REPEAT_S", 0.0)
    with pytest.raises(KeyboardInterrupt), StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)  # the handler runs between bytecodes: the raise comes here at the latest
        pytest.fail("the second signal did not stop at once")


def test_train_latents_fills_the_cache_ahead_with_render_workers(tmp_path, vae_dir, trained, monkeypatch):
    cache = json.dumps(str(tmp_path / "latents"))
    cfg_path = write_config(tmp_path, vae_dir, "ahead", steps=4)
    summary = cache_pool_latents(load_dit_train_config(cfg_path, [f"latent_cache_dir={cache}", "data.workers=2"]),
                                 progress=False)
    assert summary["clips"] == summary["encoded"] == 8 and summary["already_cached"] == 0
    assert len(list((tmp_path / "latents").rglob("*.safetensors"))) == 8
    again = cache_pool_latents(load_dit_train_config(cfg_path, [f"latent_cache_dir={cache}"]), progress=False)
    assert again["encoded"] == 0 and again["already_cached"] == 8
    from kinema.cli import main  # the command: same fill, with the command's defaults
    cli_cache = json.dumps(str(tmp_path / "cli-latents"))
    assert main(["train", "latents", "--config", str(cfg_path), "--set", f"latent_cache_dir={cli_cache}", "--quiet"]) == 0
    assert len(list((tmp_path / "cli-latents").rglob("*.safetensors"))) == 8

    def never(*args, **kwargs):
        raise AssertionError("encoded or rendered although the latent was cached ahead")

    monkeypatch.setattr(CausalVideoVAE, "encode", never)
    monkeypatch.setattr("kinema.data.loader.make_clip", never)
    train_dit(load_dit_train_config(cfg_path, [f"latent_cache_dir={cache}"]), progress=False)
    full = losses(trained[0] / "full")
    for step, loss in losses(tmp_path / "ahead").items():
        assert loss == pytest.approx(full[step], rel=1e-5, abs=1e-7), step
    with pytest.raises(ValueError, match="fills latent_cache_dir"):
        cache_pool_latents(load_dit_train_config(cfg_path), progress=False)
    fresh = load_dit_train_config(cfg_path, [f"latent_cache_dir={cache}"])
    fresh.data.num_clips = None  # a fresh clip every sample: nothing to fill ahead
    with pytest.raises(ValueError, match="fixed world pool"):
        cache_pool_latents(fresh, progress=False)


def test_latent_cache_files_are_checked(tmp_path, vae_dir):
    from kinema.train.latent_cache import LatentCache

    vae = CausalVideoVAE.from_pretrained(vae_dir)
    key, z = ("world", 7, 5, 32, 32), torch.randn(4, 2, 4, 4)
    LatentCache(vae, tmp_path)[key] = z
    again = LatentCache(vae, tmp_path)
    assert key in again and torch.equal(again[key], z) and again.loaded == 1
    assert ("world", 8, 5, 32, 32) not in again
    with pytest.raises(KeyError):
        again[("world", 8, 5, 32, 32)]
    path = again.path(key)
    path.write_bytes(b"not a safetensors file")
    assert key not in LatentCache(vae, tmp_path)  # unreadable: re-encoded, never trusted
    other = CausalVideoVAE.from_pretrained(vae_dir)
    with torch.no_grad():
        next(other.encoder.parameters()).add_(1.0)
    LatentCache(vae, tmp_path)[key] = z
    assert key not in LatentCache(other, tmp_path)  # another encoder: another folder
    with pytest.raises(ValueError, match="needs the autoencoder"):
        LatentCache(None, tmp_path)


def test_latent_cache_fingerprint_ignores_default_valued_fields(vae_dir):
    """A config field at its default (as one added later is, in folders saved before it) does not
    change the fingerprint; a field that differs from the default does."""

    from kinema.train.latent_cache import config_identity, encoder_fingerprint

    vae = CausalVideoVAE.from_pretrained(vae_dir)
    ident = config_identity(vae.config)
    assert "shortcut" not in ident and ident["latent_channels"] == 4  # "none" is the default; 16 channels are the default

    @dataclasses.dataclass
    class Later(type(vae.config)):  # the same config class with a field added since
        added: str = "off"

    fields = dataclasses.asdict(vae.config)
    assert config_identity(Later(**fields)) == ident
    assert config_identity(Later(**fields, added="on")) == {**ident, "added": "on"}
    before = encoder_fingerprint(vae)
    vae.config = dataclasses.replace(vae.config, scaling_factor=vae.config.scaling_factor + 1.0)
    assert encoder_fingerprint(vae) != before


def test_torchrun_two_processes_match_one(tmp_path, vae_dir, trained):
    cfg_path = write_config(tmp_path, vae_dir, "ddp", steps=6)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "kinema", "train", "dit", "--config", str(cfg_path), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"world_size": 2' in proc.stdout
    full, ddp = losses(trained[0] / "full"), losses(tmp_path / "ddp")
    for step in range(1, 7):
        assert ddp[step] == pytest.approx(full[step], rel=1e-4), step


def test_bf16_on_a_cpu_without_bf16_arithmetic_is_named_as_slow(tmp_path, vae_dir, monkeypatch):
    from kinema.train import distributed

    cpu = torch.device("cpu")
    message = distributed.slow_bf16_warning(cpu, {"avx2", "fma"})
    assert "fp32" in message and "avx512_bf16" in message
    assert distributed.slow_bf16_warning(cpu, {"avx2", "avx512f", "avx512_bf16"}) is None
    assert distributed.slow_bf16_warning(cpu, {"amx_bf16"}) is None
    assert distributed.slow_bf16_warning(torch.device("cuda")) is None
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert distributed.cpu_flags(str(info)) == {"fpu", "sse", "avx2"}
    assert distributed.cpu_flags(str(tmp_path / "none")) is None
    monkeypatch.setattr(distributed, "cpu_flags", lambda: {"avx2"})  # a bf16 run on such a CPU says so
    with pytest.warns(UserWarning, match="precision = 'fp32'"):
        train_dit(load_dit_train_config(write_config(tmp_path, vae_dir, "b", steps=1), ["precision='bf16'"]),
                  progress=False)


def test_config_errors(tmp_path, vae_dir):
    cfg = write_config(tmp_path, vae_dir, "x")
    with pytest.raises(ConfigError, match="unknown config key"):
        load_dit_train_config(cfg, ["optim.momentum=0.9"])
    with pytest.raises(ConfigError, match="unknown DiT preset"):
        load_dit_train_config(cfg, ["preset=dit-huge"])
    with pytest.raises(ValueError, match="multiples of 16"):
        train_dit(load_dit_train_config(cfg, ["data.buckets=[[5, 40, 40]]"]), progress=False)


def test_the_training_shift_is_not_a_sampling_default(tmp_path, vae_dir):
    """timestep_shift moves the training times only; the model's sampling shift is sample_shift."""
    cfg = write_config(tmp_path, vae_dir, "x")
    assert sampling_defaults(load_dit_train_config(cfg, ["timestep_shift=3.0"])).shift is None  # token count
    d = sampling_defaults(load_dit_train_config(cfg, ["timestep_shift=3.0", "sample_shift=2.0"]), steps=7)
    assert (d.shift, d.num_inference_steps, d.guidance_scale, d.num_frames, d.height) == (2.0, 7, 2.0, 5, 32)
    assert sampling_defaults(load_dit_train_config(cfg)).num_inference_steps == 3  # the config's sample_steps


def test_a_time_range_run_trains_at_those_noise_levels_only(tmp_path, vae_dir, monkeypatch):
    """time_range = [lo, hi] (a high-noise expert's run): every training time lies in it."""
    import kinema.train.dit as train_module

    drawn, sample = [], train_module.flow.sample_timesteps
    monkeypatch.setattr(train_module.flow, "sample_timesteps", lambda *a, **k: drawn.append(sample(*a, **k)) or drawn[-1])
    train_dit(load_dit_train_config(write_config(tmp_path, vae_dir, "high", steps=2),
                                    ["time_range=[0.75, 1.0]", "timestep_shift=3.0"]), progress=False)
    t = torch.cat(drawn)
    assert len(t) == 2 * 4 and 0.75 <= t.min() and t.max() <= 1.0


@pytest.fixture(scope="module")
def pipe(trained):
    return KinemaPipeline.from_pretrained(trained[0] / "full" / "model")


def test_pipeline_same_seed_same_video(pipe):
    def run(seed, **kw):
        return pipe("a red ball moving right", generator=torch.Generator().manual_seed(seed), progress=False, **kw).frames[0]
    a, b, c = run(1), run(1), run(2)
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert run(1, num_frames=9, height=48, width=64).shape == (9, 48, 64, 3)
    uint8 = pipe(["a", "b"], output_type="uint8", num_inference_steps=2, progress=False).frames
    assert len(uint8) == 2 and uint8[0].dtype == np.uint8


@pytest.fixture(scope="module")
def strong(pipe):
    """The tiny pipeline with its DiT's weights perturbed, so its text path is not ~zero."""

    dit = copy.deepcopy(pipe.dit)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return KinemaPipeline(pipe.vae, dit, pipe.text_encoder, pipe.defaults)


def test_negative_prompt_and_guidance_are_used(strong):
    """On a DiT whose text path is not ~zero, the negative prompt and the guidance scale change the
    video; guidance 1 ignores the negative prompt (one forward pass)."""
    def run(**kw):
        return strong("a red ball", generator=torch.Generator().manual_seed(0), progress=False, **kw).frames[0]
    base = run(guidance_scale=3.0)
    assert not np.array_equal(base, run(guidance_scale=3.0, negative_prompt="a blue square"))
    assert not np.array_equal(base, run(guidance_scale=1.0))
    assert np.array_equal(run(guidance_scale=1.0), run(guidance_scale=1.0, negative_prompt="a blue square"))


def test_high_noise_expert_runs_the_steps_at_and_above_its_boundary(pipe, strong, monkeypatch, tmp_path):
    """With a high-noise expert (dit_high) and a boundary b, the steps at t >= b run the expert and
    the others the base DiT; no boundary runs the base alone, bit for bit; the expert and its boundary
    survive save_pretrained / from_pretrained; a mismatched expert or a boundary without one is an error."""
    seen = []
    for name, model in (("base", pipe.dit), ("expert", strong.dit)):
        forward = model.forward
        monkeypatch.setattr(model, "forward", lambda x, t, *a, _f=forward, _n=name, **k: seen.append(
            (_n, round(float(t[0]), 4))) or _f(x, t, *a, **k))

    def run(p):
        seen.clear()
        return p("a red ball", generator=torch.Generator().manual_seed(0), progress=False, num_inference_steps=5,
                 eta=0.0).frames[0]
    uniform = dataclasses.replace(pipe.defaults, shift=1.0)  # times 1, .8, .6, .4, .2
    two = KinemaPipeline(pipe.vae, pipe.dit, pipe.text_encoder, uniform, dit_high=strong.dit, expert_boundary=0.6)
    mixed = run(two)
    assert seen == [("expert", 1.0), ("expert", 0.8), ("expert", 0.6), ("base", 0.4), ("base", 0.2)]  # guidance batched
    two.expert_boundary = None
    off = run(two)
    assert {n for n, _ in seen} == {"base"}
    base = KinemaPipeline(pipe.vae, pipe.dit, pipe.text_encoder, uniform)
    assert np.array_equal(off, run(base)) and not np.array_equal(off, mixed)
    two.expert_boundary = 0.6
    two.save_pretrained(tmp_path / "two")
    back = KinemaPipeline.from_pretrained(tmp_path / "two")
    assert back.expert_boundary == 0.6 and json.loads((tmp_path / "two" / "model_index.json").read_text())["dit_high"] == "dit_high"
    torch.testing.assert_close(back.dit_high.state_dict(), strong.dit.state_dict())
    assert np.array_equal(run(back), mixed)
    with pytest.raises(ValueError, match="needs a high-noise expert"):
        base.expert_boundary = 0.5
    with pytest.raises(ValueError, match=r"noise level in \[0, 1\]"):
        two.expert_boundary = 1.5
    other = copy.deepcopy(strong.dit)
    other.cfg = dataclasses.replace(other.cfg, depth=other.cfg.depth + 1)
    with pytest.raises(ValueError, match="same DiT"):
        KinemaPipeline(pipe.vae, pipe.dit, pipe.text_encoder, dit_high=other)


def test_binding_guidance_steers_two_object_prompts_only(strong, monkeypatch):
    """binding_guidance h adds h (v(prompt) - v(objects swapped)): a third DiT pass on the swapped
    caption for a two-object prompt, nothing for a one-object one; 0 (the default) is the plain pipeline."""

    two, one = "a red ball moving left while a blue square spins", "a red ball moving left"
    encoded, batches = [], []
    encode, forward = strong.text_encoder.encode, strong.dit.forward
    monkeypatch.setattr(strong.text_encoder, "encode", lambda texts: encoded.append(list(texts)) or encode(texts))
    monkeypatch.setattr(strong.dit, "forward", lambda x, *a, **k: batches.append(x.shape[0]) or forward(x, *a, **k))

    def run(prompt, p=strong, **kw):
        encoded.clear(), batches.clear()
        return p(prompt, generator=torch.Generator().manual_seed(0), progress=False, num_inference_steps=2,
                 refine_prompt=False, **kw).frames[0]
    base = run(two)
    assert np.array_equal(base, run(two, binding_guidance=0.0)) and set(batches) == {2}
    bound = run(two, binding_guidance=1.0)
    assert not np.array_equal(base, bound) and set(batches) == {3}  # caption, empty, swapped
    assert encoded[-1] == ["a blue square moving left while a red ball spins"]  # the swapped caption
    assert np.array_equal(run(one), run(one, binding_guidance=1.0)) and set(batches) == {2}  # nothing to swap
    plain = run(two, guidance_scale=1.0)
    assert set(batches) == {1}  # guidance 1: the conditional pass alone
    assert not np.array_equal(plain, run(two, guidance_scale=1.0, binding_guidance=1.0)) and set(batches) == {2}
    default_on = KinemaPipeline(strong.vae, strong.dit, strong.text_encoder,
                                dataclasses.replace(strong.defaults, binding_guidance=1.0))
    assert np.array_equal(run(two, p=default_on), bound)  # a model folder's default is what a call uses
    with pytest.raises(ValueError, match="binding_guidance must be >= 0"):
        run(two, binding_guidance=-1.0)


def test_stochastic_sampling_follows_the_seed_and_the_model_default(pipe):
    """eta > 0 draws fresh noise from the call's generator: the same seed gives the same video, and
    a model folder's default eta is what a call without one uses."""

    def run(p=pipe, **kw):
        return p("a red ball moving right", generator=torch.Generator().manual_seed(3), output_type="uint8",
                 progress=False, num_inference_steps=4, **kw).frames[0]
    euler = run()
    assert pipe.defaults.eta == 0.0 and np.array_equal(euler, run(eta=0.0))
    ancestral = run(eta=1.0)
    assert np.array_equal(ancestral, run(eta=1.0)) and not np.array_equal(ancestral, euler)
    stochastic = KinemaPipeline(pipe.vae, pipe.dit, pipe.text_encoder, dataclasses.replace(pipe.defaults, eta=1.0))
    assert np.array_equal(run(stochastic), ancestral) and np.array_equal(run(stochastic, eta=0.0), euler)


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt=""), "empty"), (dict(prompt=["ok", " "]), "empty"),
    (dict(num_frames=6), "4k\\+1"), (dict(height=40), "multiple of 16"), (dict(width=8), "multiple of 16"),
    (dict(num_inference_steps=0), ">= 1"), (dict(guidance_scale=-1), ">= 0"), (dict(output_type="pil"), "output_type"),
    (dict(eta=1.5), "eta must lie in"), (dict(eta=-0.1), "eta must lie in"),
])
def test_pipeline_bad_arguments(pipe, kwargs, message):
    kwargs = {"prompt": "a red ball", **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(progress=False, **kwargs)


def test_no_default_model_yet_is_a_clear_error(monkeypatch, tmp_path):
    import kinema.pipelines.pipeline as pl

    monkeypatch.setattr(pl, "DEFAULT_MODEL_DIR", tmp_path / "weights" / "default")
    with pytest.raises(FileNotFoundError, match="no default model is shipped"):
        KinemaPipeline.from_pretrained()


def test_generation_reads_the_refined_prompt_unless_refinement_is_off(pipe):
    """A prompt with an untrained word is generated exactly as its refined text would be; with
    refinement off (call or model default) the DiT reads it as written."""
    from collections import Counter

    from kinema.text.refine import PromptRefiner

    vocab = Counter("a small red ball moving right".split())
    refined = KinemaPipeline(pipe.vae, pipe.dit, pipe.text_encoder, pipe.defaults, PromptRefiner(pipe.text_encoder, vocab))

    def run(p, prompt, **kw):
        return p(prompt, generator=torch.Generator().manual_seed(0), num_inference_steps=2, progress=False, **kw)
    out = run(refined, "a tiny red ball moving right")
    assert out.prompts == ["a small red ball moving right"]
    assert refined.untrained_words("a tiny red Zebra, a zebra moving right") == ["tiny", "Zebra"]
    assert refined.untrained_words(out.prompts[0]) == []
    no_vocabulary = KinemaPipeline(pipe.vae, pipe.dit, pipe.text_encoder, pipe.defaults, None)
    assert no_vocabulary.untrained_words("a zebra") == []  # nothing to tell by
    assert np.array_equal(out.frames[0], run(pipe, "a small red ball moving right", refine_prompt=False).frames[0])
    assert run(refined, "a tiny red ball moving right", refine_prompt=False).prompts == ["a tiny red ball moving right"]
    refined.defaults = type(pipe.defaults)(**{**vars(pipe.defaults), "refine_prompt": False})
    assert run(refined, "a tiny red ball moving right").prompts == ["a tiny red ball moving right"]


def test_save_pretrained_round_trip_and_export(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "copy")
    again = KinemaPipeline.from_pretrained(tmp_path / "copy")
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = pipe("a red ball", generator=gen(), progress=False).frames[0]
    b = again("a red ball", generator=gen(), progress=False).frames[0]
    assert np.array_equal(a, b)
    assert again.refiner.vocabulary == pipe.refiner.vocabulary  # caption_vocab.json travels with the model
    assert again.refiner.pairs == pipe.refiner.pairs and pipe.refiner.pairs  # with its word pairs
    path = export_to_video(a, str(tmp_path / "v.mp4"), fps=4)
    assert read_video_info(path).num_frames == 5 and read_video_info(path).fps == 4.0
    with pytest.raises(FileNotFoundError, match="not a Kinema model folder"):
        KinemaPipeline.from_pretrained(tmp_path)


def test_clause_attention_travels_with_the_model(pipe, tmp_path, vae_dir):
    """A run trained with text_clause_attention writes it into its model, a saved pipeline keeps
    it, and both load with it; a model without it writes no key (older folders read as off)."""
    from kinema.text import load_text_encoder

    train_dit(load_dit_train_config(write_config(tmp_path, vae_dir, "run", steps=2), ["text_clause_attention=true"]),
              progress=False)
    assert KinemaPipeline.from_pretrained(tmp_path / "run" / "model").text_encoder.clause_attention

    pipe.save_pretrained(tmp_path / "plain")
    assert "text_clause_attention" not in json.loads((tmp_path / "plain" / "model_index.json").read_text())
    clauses = KinemaPipeline(pipe.vae, pipe.dit, load_text_encoder("minilm", pipe.text_encoder.max_length,
                                                                  clause_attention=True), pipe.defaults)
    clauses.save_pretrained(tmp_path / "clauses")
    assert json.loads((tmp_path / "clauses" / "model_index.json").read_text())["text_clause_attention"] is True
    again = KinemaPipeline.from_pretrained(tmp_path / "clauses")
    assert again.text_encoder.clause_attention and not pipe.text_encoder.clause_attention
    prompt = "a red ball moving left while a blue square spins"
    assert torch.equal(again.text_encoder.encode([prompt])[0], clauses.text_encoder.encode([prompt])[0])
    assert not torch.equal(again.text_encoder.encode([prompt])[0], pipe.text_encoder.encode([prompt])[0])


def test_cli_generate_every_flag(trained, tmp_path):
    model = trained[0] / "full" / "model"
    out = tmp_path / "g.mp4"
    cmd = [sys.executable, "-m", "kinema", "generate", "a red ball moving right", "--out", str(out), "--model", str(model),
           "--seed", "3", "--steps", "2", "--guidance", "1.5", "--eta", "0.5", "--negative", "a blue square", "--frames", "9",
           "--width", "48", "--height", "32", "--fps", "4", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    first = read_video(out)
    assert first.shape == (9, 32, 48, 3) and read_video_info(out).fps == 4.0
    assert json.loads(r.stdout)["seed"] == 3 and json.loads(r.stdout)["read_as"] and json.loads(r.stdout)["eta"] == 0.5
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    assert np.abs(read_video(out).astype(int) - first.astype(int)).mean() < 1  # same seed, same video
    for bad, message in [(["--frames", "8"], "4k+1"), (["--width", "50"], "multiple of 16"), (["--eta", "2"], "eta must")]:
        r = subprocess.run(cmd + bad, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "kinema", "generate", " ", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "empty" in r.stderr
    r = subprocess.run([sys.executable, "-m", "kinema", "generate", "a ball", "--out", str(out), "--model",
                        str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2 and "no model folder" in r.stderr


def write_mix(folder: Path, latents: torch.Tensor, captions: list[str]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.to(torch.float16).contiguous()}, str(folder / "latents.safetensors"))
    (folder / "samples.json").write_text(json.dumps({"captions": captions}))
    return folder


def test_mixed_latents_replace_the_drawn_share_of_samples(tmp_path):
    from kinema.train.mix import MixedLatents

    mix_dir = write_mix(tmp_path / "mix", torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 4, 2, 4, 4), ["a", "b", "c"])
    x0, texts = torch.full((400, 4, 2, 4, 4), -1.0), ["pool"] * 400
    for share, lo, hi in ((0.0, 0, 0), (0.5, 160, 240), (1.0, 400, 400)):
        mix = MixedLatents(mix_dir, share)
        x, t, n = mix.apply(0, 3, list(range(400)), x0, texts)
        assert lo <= n <= hi and sum(s != "pool" for s in t) == n
        replaced = [i for i, s in enumerate(t) if s != "pool"]
        assert all(x[i].eq("abc".index(t[i])).all() for i in replaced)  # each latent with its own caption
        assert x0.eq(-1).all() and texts == ["pool"] * 400  # the inputs are left as they were
        assert torch.equal(x, mix.apply(0, 3, list(range(400)), x0, texts)[0])  # the same draw again
    assert not torch.equal(MixedLatents(mix_dir, 0.5).apply(0, 4, list(range(400)), x0, texts)[0], x)
    with pytest.raises(ValueError, match="latents of shape"):
        MixedLatents(mix_dir, 0.5).apply(0, 0, [0], torch.zeros(1, 4, 2, 8, 8), ["x"])
    with pytest.raises(FileNotFoundError, match="scripts/raft.py collect"):
        MixedLatents(tmp_path / "nothing", 0.5)


def test_a_run_trained_on_mixed_latents_only_ignores_its_pool(tmp_path, vae_dir):
    """mix_share = 1: every sample is a mixed latent, so two pools give the same losses."""
    mix_dir = write_mix(tmp_path / "mix", torch.randn(5, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0)),
                        [f"a red circle number {i}" for i in range(5)])
    runs = []
    for data_seed in (0, 1):
        name = f"mix{data_seed}"
        cfg = load_dit_train_config(write_config(tmp_path, vae_dir, name, steps=3),
                                    [f"mix_latents={json.dumps(str(mix_dir))}", "mix_share=1.0", f"data.seed={data_seed}"])
        train_dit(cfg, progress=False)
        runs.append(losses(tmp_path / name))
    assert runs[0] == pytest.approx(runs[1], rel=1e-6)
    plain = load_dit_train_config(write_config(tmp_path, vae_dir, "plain", steps=3), [])
    train_dit(plain, progress=False)
    assert losses(tmp_path / "plain") != pytest.approx(runs[0], rel=1e-3)
    with pytest.raises(ConfigError, match="mix_share"):
        load_dit_train_config(write_config(tmp_path, vae_dir, "bad"), ["mix_share=1.5"])


def test_pipeline_output_carries_the_latents_it_decoded(pipe):
    seen = []
    decode = pipe.vae.decode
    pipe.vae.decode = lambda z: (seen.append(z), decode(z))[1]
    try:
        out = pipe(["a red circle", "a blue square"], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                   output_type="uint8", progress=False)
    finally:
        pipe.vae.decode = decode
    assert out.latents.shape[0] == 2 and torch.equal(pipe.vae.denormalize(out.latents), seen[0])
