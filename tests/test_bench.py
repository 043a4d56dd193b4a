"""`kinema bench`: the timing and memory primitives, the matched diffusers models, and one tiny
end-to-end run through the CLI (JSON written, every section present)."""
import json

import pytest
import torch

from kinema.bench.timing import StageMemory, interleaved, matmul_peak, peak_memory
from kinema.cli import main

CPU = torch.device("cpu")


def test_interleaved_times_every_function_each_round():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, device=CPU)
    assert calls == ["a", "b"] * 4  # one warm-up round, then 3 timed rounds, alternating
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3} and min(times["a"]) >= 0


def test_stage_memory_sees_a_large_allocation():
    big = 64 * 2 ** 20

    def allocate():
        x = torch.ones(big // 4)  # 64 MB of float32, touched
        return float(x[::4096].sum())

    assert peak_memory(allocate, CPU) >= 0.8 * big
    with StageMemory(CPU) as mem:
        mem.mark("small")
        torch.ones(10)
        mem.mark("large")
        allocate()
    assert mem.peaks["large"] >= 0.8 * big > mem.peaks["small"]


def test_matmul_peak_is_a_plausible_flop_rate():
    assert 1e8 < matmul_peak(CPU, torch.float32, n=256, repeats=2) < 1e14


def test_matched_diffusers_models_have_our_shapes():
    pytest.importorskip("diffusers")
    from kinema.autoencoder import CausalVideoVAE, VAEConfig
    from kinema.bench.versus import wan_transformer_like, wan_vae_like
    from kinema.models.dit import DiT, dit_config

    cfg = dit_config("dit-t", hidden_size=48, depth=2, num_heads=2, in_channels=4, text_dim=32)
    wan = wan_transformer_like(cfg)
    x, t, text = torch.randn(2, 4, 2, 4, 4), torch.rand(2), torch.randn(2, 7, 32)
    with torch.no_grad():
        assert wan(x, t * 1000, text, return_dict=False)[0].shape == DiT(cfg)(x, t, text).shape == x.shape
    assert wan.config.num_layers == 2 and wan.config.num_attention_heads * wan.config.attention_head_dim == 48
    # The 4x8x8 recipe's layout (4x4 patchify, one spatial halving) -> Wan with a 2x2 patchify.
    vae = CausalVideoVAE(VAEConfig(latent_channels=4, patch_size=4, base_channels=8, channel_mult=(1, 2, 2),
                                   spatial_down=(True, False), temporal_down=(True, True), norm_groups=4)).eval()
    wan_vae, how = wan_vae_like(vae)
    assert "patch 2" in how and wan_vae.config.dim_mult == [1, 2, 2]
    clip = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        assert wan_vae.encode(clip).latent_dist.mode().shape == vae.encode(clip).mode().shape == (1, 4, 3, 4, 4)
        assert wan_vae.decode(vae.encode(clip).mode()).sample.shape == clip.shape


def test_bench_cli_runs_and_saves_json(tmp_path, capsys):
    from kinema.autoencoder import CausalVideoVAE, VAEConfig
    from kinema.models.dit import DiT, dit_config
    from kinema.pipelines.pipeline import PipelineDefaults, save_pipeline_folder

    torch.manual_seed(0)
    CausalVideoVAE(VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 1, 1), norm_groups=4)) \
        .save_pretrained(tmp_path / "vae")
    cfg = dit_config("dit-t", hidden_size=48, depth=2, num_heads=2, in_channels=4, text_dim=384)
    model = save_pipeline_folder(tmp_path / "model", tmp_path / "vae", DiT(cfg), cfg, "minilm", 32,
                                 PipelineDefaults(num_frames=5, height=32, width=32, num_inference_steps=2))
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(model), "--frames", "5", "--height", "32", "--width", "32", "--steps", "2",
                 "--batch", "2", "--vae-batch", "1", "--repeats", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["kind"] == "kinema-bench" and r["precision"] == "fp32" and r["settings"]["repeats"] == 2
    g = r["generation"]
    assert g["steps"] == 2 and all(g[s]["s"] > 0 for s in ("text_encode", "denoise", "decode", "total"))
    assert g["total"]["s"] >= g["denoise"]["s"] and "peak_mb" in g["decode"]
    d = r["denoiser"]
    assert d["tokens_per_sample"] == 2 * 2 * 2 and d["forward"]["tokens_per_s"] > 0
    assert 0 < d["forward"]["mfu"] and 0 < d["train_step"]["mfu"] and d["train_step"]["samples_per_s"] > 0
    v = r["versus_diffusers"]
    if "skipped" not in v:  # diffusers installed (the test extra has it)
        assert v["dit"]["ratio"] > 0 and len(v["dit"]["ours_runs_s"]) == 2
        assert v["vae"]["ratio"] > 0 and v["vae"]["latent"] == [4, 2, 4, 4]
        assert "ratio" in printed
    assert "text_encode" in printed and "MFU" in printed


def test_bench_cli_errors(tmp_path, capsys):
    assert main(["bench", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "b.json")]) == 2
    assert "no model folder" in capsys.readouterr().err
    assert main(["bench", "--repeats", "0", "--out", str(tmp_path / "b.json")]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
