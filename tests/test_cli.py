"""The `kinema` command line: every subcommand and flag of the shapes-world issue."""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from kinema.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "kinema", *args], capture_output=True, text=True, timeout=300)


def test_malloc_tuning_takes_on_glibc_and_can_be_switched_off(monkeypatch):
    """kinema/malloc.py: the command keeps freed tensor memory in the heap (benchmarks/generate_speed.py
    --malloc both measures what it gives); KINEMA_MALLOC=default leaves malloc alone."""
    import platform

    from kinema.malloc import tune_malloc
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert tune_malloc() is True
    monkeypatch.setenv("KINEMA_MALLOC", "default")
    assert tune_malloc() is False


def test_world_sample_then_judge(tmp_path):
    out, gt = tmp_path / "clip.mp4", tmp_path / "gt.json"
    assert main(["world", "sample", "--seed", "4", "--out", str(out), "--width", "96", "--height", "64",
                 "--frames", "9", "--fps", "6", "--ground-truth", str(gt)]) == 0
    truth = json.loads(gt.read_text())
    assert (truth["width"], truth["height"], truth["num_frames"], truth["fps"]) == (96, 64, 9, 6.0)
    r = run("judge", str(out), "--prompt", truth["text"], "--json-out", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["pass"] is True and report["video"] == str(out)
    assert json.loads((tmp_path / "r.json").read_text())["pass"] is True


def test_judge_exit_codes(tmp_path):
    out = tmp_path / "clip.mp4"
    main(["world", "sample", "--seed", "4", "--out", str(out)])
    failing = run("judge", str(out), "--prompt", "a white triangle moving up on a navy background")
    assert failing.returncode == 1 and json.loads(failing.stdout)["pass"] is False
    oov = run("judge", str(out), "--prompt", "a dragon breathing fire")
    assert oov.returncode == 2 and "'dragon'" in oov.stderr and "'breathing'" in oov.stderr
    assert "Traceback" not in oov.stderr
    missing = run("judge", str(tmp_path / "nope.mp4"), "--prompt", "a red ball")
    assert missing.returncode == 2 and "nope.mp4" in missing.stderr


def test_data_synth_and_check(tmp_path):
    out = tmp_path / "ds"
    r = run("data", "synth", "--out", str(out), "--clips", "6", "--width", "64", "--height", "96",
            "--frames", "5", "--fps", "4", "--seed", "9", "--workers", "2", "--crf", "20")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["clips"] == 6
    assert "synth" in r.stderr  # the progress bar
    rows = list(csv.DictReader(open(out / "metadata.csv")))
    assert {(x["num_frames"], x["height"], x["width"], x["fps"]) for x in rows} == {("5", "96", "64", "4.0")}
    check = run("data", "check", str(out / "metadata.csv"))
    assert check.returncode == 0 and json.loads(check.stdout)["buckets"] == {"5x96x64": 6}
    bad = run("data", "synth", "--out", str(tmp_path / "x"), "--clips", "3", "--width", "20")
    assert bad.returncode == 2 and ">= 32" in bad.stderr


def test_data_check_fill(tmp_path):
    main(["world", "sample", "--seed", "1", "--out", str(tmp_path / "a.mp4")])
    (tmp_path / "m.csv").write_text("path,text\na.mp4,a clip\n")
    assert main(["data", "check", str(tmp_path / "m.csv"), "--fill", "--quiet"]) == 0
    row = next(csv.DictReader(open(tmp_path / "m.csv")))
    assert (row["num_frames"], row["height"], row["width"]) == ("17", "64", "64")


def test_version_and_help():
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    r = run("--help")
    assert r.returncode == 0 and "data" in r.stdout and "judge" in r.stdout


def test_train_vae_cli(tmp_path):
    cfg = tmp_path / "vae.toml"
    cfg.write_text(f'''steps = 2
precision = "fp32"
eval_clips = 2
scale_clips = 2
checkpoint_every = 1
log_every = 1
out_dir = "{tmp_path / 'vae'}"
[model]
latent_channels = 4
base_channels = 8
channel_mult = [1, 1, 1]
norm_groups = 4
[data]
width = 32
height = 32
frames = 5
batch_size = 1
''')
    r = run("train", "vae", "--config", str(cfg), "--set", "optim.lr=1e-3", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["params"] > 0
    assert (tmp_path / "vae" / "model.safetensors").is_file() and (tmp_path / "vae" / "config.json").is_file()
    bad = run("train", "vae", "--config", str(cfg), "--set", "model.channels=3")
    assert bad.returncode == 2 and "unknown config key" in bad.stderr


def test_export_copies_generation_files_and_checks_a_swapped_decoder(tmp_path):
    from kinema.autoencoder import CausalVideoVAE, VAEConfig
    from kinema.models.dit import DiT, dit_config
    from kinema.pipelines import KinemaPipeline
    from kinema.pipelines.pipeline import PipelineDefaults, save_pipeline_folder

    torch.manual_seed(0)
    vae = CausalVideoVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), norm_groups=4))
    vae.save_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "log.jsonl").write_text("{}\n")  # training leftovers must not travel
    cfg = dit_config("dit-t", hidden_size=48, depth=2, num_heads=2, in_channels=4, text_dim=384)
    model = save_pipeline_folder(tmp_path / "model", tmp_path / "vae", DiT(cfg), cfg, "minilm", 32,
                                 PipelineDefaults(num_frames=5, height=32, width=32, num_inference_steps=2),
                                 vocabulary={"a": 2, "red": 1, "ball": 1}, vocabulary_source="test")
    with torch.no_grad():  # a decoder fine-tune: same encoder and factors, new decoder
        for p in vae.decoder.parameters():
            p.add_(0.01)
    vae.save_pretrained(tmp_path / "decoder")
    out = tmp_path / "shipped"
    assert main(["export", str(model), "--out", str(out), "--vae", str(tmp_path / "decoder"), "--guidance", "3.5",
                 "--shift", "2", "--eta", "0.7"]) == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["caption_vocab.json", "dit/config.json", "dit/model.safetensors", "model_index.json",
                     "vae/config.json", "vae/model.safetensors"]
    pipe = KinemaPipeline.from_pretrained(out)
    assert pipe.refiner.vocabulary == {"a": 2, "red": 1, "ball": 1}
    assert (pipe.defaults.guidance_scale, pipe.defaults.num_inference_steps, pipe.defaults.shift) == (3.5, 2, 2.0)
    assert pipe.defaults.eta == 0.7
    assert main(["export", str(out), "--out", str(tmp_path / "auto"), "--shift", "auto"]) == 0
    assert KinemaPipeline.from_pretrained(tmp_path / "auto").defaults.shift is None  # from the token count
    assert run("export", str(out), "--out", str(tmp_path / "bad"), "--shift", "lots").returncode == 2
    for a, b in zip(pipe.vae.decoder.parameters(), vae.decoder.parameters()):
        assert torch.equal(a, b)
    other = CausalVideoVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), norm_groups=4))
    other.save_pretrained(tmp_path / "other")  # another encoder: another latent space
    r = run("export", str(model), "--out", str(tmp_path / "x"), "--vae", str(tmp_path / "other"))
    assert r.returncode == 2 and "only a decoder fine-tune" in r.stderr and not (tmp_path / "x").exists()
    assert run("export", str(tmp_path / "nothing")).returncode == 2


def tiny_model_folder(tmp_path):
    """A tiny exported model (random VAE and DiT at 32x32x5) in tmp_path/model; returns it and the DiT config."""
    from kinema.autoencoder import CausalVideoVAE, VAEConfig
    from kinema.models.dit import DiT, dit_config
    from kinema.pipelines.pipeline import PipelineDefaults, save_pipeline_folder

    torch.manual_seed(0)
    CausalVideoVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1),
                             norm_groups=4)).save_pretrained(tmp_path / "vae")
    cfg = dit_config("dit-t", hidden_size=48, depth=2, num_heads=2, in_channels=4, text_dim=384)
    return save_pipeline_folder(tmp_path / "model", tmp_path / "vae", DiT(cfg), cfg, "minilm", 32,
                                PipelineDefaults(num_frames=5, height=32, width=32, num_inference_steps=2)), cfg


def test_export_in_fp16_halves_the_weights_and_loads_back_into_fp32(tmp_path):
    from safetensors.torch import load_file

    from kinema.models.dit import DiT
    from kinema.pipelines import KinemaPipeline
    from kinema.pipelines.pipeline import PipelineDefaults, save_pipeline_folder

    model, cfg = tiny_model_folder(tmp_path)
    assert main(["export", str(model), "--out", str(tmp_path / "full")]) == 0
    assert main(["export", str(model), "--out", str(tmp_path / "half"), "--dtype", "fp16"]) == 0
    for part in ("dit", "vae"):
        full, half = (load_file(tmp_path / f / part / "model.safetensors") for f in ("full", "half"))
        assert {v.dtype for v in half.values()} == {torch.float16}
        assert all(torch.equal(half[k], v.half()) for k, v in full.items())  # rounded once, nothing else
        sizes = [(tmp_path / f / part / "model.safetensors").stat().st_size for f in ("full", "half")]
        assert sizes[1] < 0.6 * sizes[0]  # half the data; the header (names, shapes) stays
    a, b = KinemaPipeline.from_pretrained(tmp_path / "full"), KinemaPipeline.from_pretrained(tmp_path / "half")
    assert {p.dtype for p in b.dit.parameters()} == {torch.float32}  # cast back: runs as the fp32 model
    torch.testing.assert_close(b.dit.state_dict(), {k: v.half().float() for k, v in a.dit.state_dict().items()})
    fa, fb = (p("a red circle", generator=torch.Generator().manual_seed(0), output_type="np", progress=False).frames
              for p in (a, b))
    assert np.abs(np.asarray(fa) - np.asarray(fb)).max() < 0.05  # the same video up to weight rounding
    big = DiT(cfg)
    with torch.no_grad():
        big.final.linear.weight.fill_(1e6)  # beyond fp16's range
    huge = save_pipeline_folder(tmp_path / "huge", tmp_path / "vae", big, cfg, "minilm", 32, PipelineDefaults())
    r = run("export", str(huge), "--out", str(tmp_path / "h"), "--dtype", "fp16")
    assert r.returncode == 2 and "do not fit" in r.stderr and not (tmp_path / "h").exists()


def test_export_takes_dit_weights_from_a_checkpoint(tmp_path):
    from safetensors.torch import load_file, save_file

    from kinema.models.dit import DiT

    model, cfg = tiny_model_folder(tmp_path)
    ckpt = tmp_path / "checkpoints" / "step_0000010"
    ckpt.mkdir(parents=True)
    ema = {k: v + 1 for k, v in DiT(cfg).state_dict().items()}
    save_file(ema, ckpt / "ema.safetensors")
    save_file({k: v.contiguous() for k, v in DiT(cfg).state_dict().items()}, ckpt / "model.safetensors")
    out = tmp_path / "mid"
    assert main(["export", str(model), "--out", str(out), "--checkpoint", str(ckpt)]) == 0
    got = load_file(out / "dit" / "model.safetensors")
    assert all(torch.equal(got[k], v) for k, v in ema.items())  # the EMA weights, not the raw ones
    wrong = tmp_path / "checkpoints" / "step_0000020"
    wrong.mkdir()
    save_file({"x": torch.zeros(2)}, wrong / "ema.safetensors")
    r = run("export", str(model), "--out", str(tmp_path / "y"), "--checkpoint", str(wrong))
    assert r.returncode == 2 and "another DiT" in r.stderr
    assert not (tmp_path / "y").exists() and not (tmp_path / "y.tmp").exists()


def test_export_adds_a_high_noise_expert(tmp_path):
    """--high-noise-expert DIR --expert-boundary T puts DIR's DiT in the folder as dit_high/ (cast with
    --dtype like the rest); re-exporting keeps it, --expert-boundary alone moves it; an expert
    without a boundary, a boundary without an expert, or another DiT is a clear error."""
    from safetensors.torch import load_file

    from kinema.models.dit import DiT, dit_config
    from kinema.pipelines import KinemaPipeline
    from kinema.pipelines.pipeline import PipelineDefaults, save_pipeline_folder

    model, cfg = tiny_model_folder(tmp_path)
    expert = save_pipeline_folder(tmp_path / "expert", tmp_path / "vae", DiT(cfg), cfg, "minilm", 32, PipelineDefaults())
    out = tmp_path / "two"
    assert main(["export", str(model), "--out", str(out), "--high-noise-expert", str(expert),
                 "--expert-boundary", "0.7", "--dtype", "fp16"]) == 0
    assert {"dit_high/config.json", "dit_high/model.safetensors"} <= {p.relative_to(out).as_posix()
                                                                     for p in out.rglob("*") if p.is_file()}
    half = load_file(out / "dit_high" / "model.safetensors")
    assert all(torch.equal(half[k], v.half()) for k, v in load_file(expert / "dit" / "model.safetensors").items())
    pipe = KinemaPipeline.from_pretrained(out)
    assert pipe.expert_boundary == 0.7 and pipe.dit_high is not None
    assert main(["export", str(out), "--out", str(tmp_path / "again")]) == 0
    assert KinemaPipeline.from_pretrained(tmp_path / "again").expert_boundary == 0.7
    assert main(["export", str(out), "--out", str(tmp_path / "moved"), "--expert-boundary", "0.9"]) == 0
    assert KinemaPipeline.from_pretrained(tmp_path / "moved").expert_boundary == 0.9
    r = run("export", str(model), "--out", str(tmp_path / "a"), "--high-noise-expert", str(expert))
    assert r.returncode == 2 and "needs expert_boundary" in r.stderr
    r = run("export", str(model), "--out", str(tmp_path / "b"), "--expert-boundary", "0.8")
    assert r.returncode == 2 and "needs a high-noise expert" in r.stderr
    wide = dit_config("dit-t", hidden_size=48, depth=3, num_heads=2, in_channels=4, text_dim=384)
    other = save_pipeline_folder(tmp_path / "other", tmp_path / "vae", DiT(wide), wide, "minilm", 32, PipelineDefaults())
    r = run("export", str(model), "--out", str(tmp_path / "c"), "--high-noise-expert", str(other), "--expert-boundary", "0.8")
    assert r.returncode == 2 and "another DiT" in r.stderr
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))


def test_export_soup_averages_the_dit_weights_of_fine_tunes(tmp_path):
    """--soup DIR...: the exported DiT's weights are the uniform mean of the model's and the others'
    (a model or run folder, or its dit/), then cast with --dtype; another DiT is a clear error."""
    from safetensors.torch import load_file

    from kinema.models.dit import DiT, dit_config
    from kinema.pipelines import KinemaPipeline
    from kinema.pipelines.pipeline import PipelineDefaults, save_pipeline_folder

    model, cfg = tiny_model_folder(tmp_path)
    b = save_pipeline_folder(tmp_path / "b", tmp_path / "vae", DiT(cfg), cfg, "minilm", 32, PipelineDefaults())
    c = save_pipeline_folder(tmp_path / "c", tmp_path / "vae", DiT(cfg), cfg, "minilm", 32, PipelineDefaults())
    parts = [load_file(f / "dit" / "model.safetensors") for f in (model, b, c)]
    (tmp_path / "run").mkdir()
    shutil.move(c, tmp_path / "run" / "model")  # a run folder: what `kinema train dit` writes to OUT
    assert main(["export", str(model), "--out", str(tmp_path / "soup"), "--soup", str(tmp_path / "run"), str(b / "dit")]) == 0
    got = load_file(tmp_path / "soup" / "dit" / "model.safetensors")
    assert got.keys() == parts[0].keys() and any(not torch.equal(v, parts[0][k]) for k, v in got.items())
    for k, v in got.items():
        torch.testing.assert_close(v, (parts[0][k] + parts[1][k] + parts[2][k]) / 3)
    assert load_file(tmp_path / "soup" / "vae" / "model.safetensors").keys()  # the rest copied as ever
    assert main(["export", str(model), "--out", str(tmp_path / "half"), "--soup", str(b), "--dtype", "fp16"]) == 0
    half = load_file(tmp_path / "half" / "dit" / "model.safetensors")
    assert all(torch.equal(half[k], ((parts[0][k] + parts[1][k]) / 2).half()) for k in half)
    assert KinemaPipeline.from_pretrained(tmp_path / "half").dit is not None
    deep = dit_config("dit-t", hidden_size=48, depth=3, num_heads=2, in_channels=4, text_dim=384)
    other = save_pipeline_folder(tmp_path / "other", tmp_path / "vae", DiT(deep), deep, "minilm", 32, PipelineDefaults())
    r = run("export", str(model), "--out", str(tmp_path / "x"), "--soup", str(other))
    assert r.returncode == 2 and "another DiT" in r.stderr and not (tmp_path / "x").exists()
    r = run("export", str(model), "--out", str(tmp_path / "y"), "--soup", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no DiT weights" in r.stderr and not (tmp_path / "y").exists()
