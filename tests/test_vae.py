"""The causal video VAE: shapes, causality, chunked/tiled inference, files, and the trainer (tiny)."""
import json

import pytest
import torch
import torch.nn.functional as F

from kinema.autoencoder import CausalVideoVAE, DiagonalGaussian, VAEConfig
from kinema.autoencoder.train import (EVAL_SEED_BASE, VAETrainConfig, edge_mask, evaluate_vae, train_seed,
                                      train_vae, vae_loss, vae_batches)
from kinema.autoencoder.vae import _blend_tiles
from kinema.config import ConfigError, load_config

TINY = dict(latent_channels=4, patch_size=2, base_channels=8, channel_mult=(1, 2, 2),
            spatial_down=(True, True), temporal_down=(True, True), norm_groups=4)
# The same with DC-AE's residual shortcuts, and a tiny 4x32x32 one (configs/vae-f32t4.toml's shape):
# the causality, chunking and tiling tests below run on all three.
TINY_DC = {**TINY, "shortcut": "space_to_channel"}
TINY_F32 = dict(latent_channels=32, patch_size=4, base_channels=8, channel_mult=(1, 2, 4, 8),
                spatial_down=(True, True, True), temporal_down=(True, True, False), norm_groups=4,
                shortcut="space_to_channel")
MODELS = {"f8": TINY, "f8-dcae": TINY_DC, "f32-dcae": TINY_F32}


def tiny_vae(seed=0, **kw) -> CausalVideoVAE:
    """A tiny 4x8x8 VAE with its weights jittered, so that no conv is the identity it starts as."""
    torch.manual_seed(seed)
    vae = CausalVideoVAE(VAEConfig(**{**TINY, **kw})).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return vae


def video(T=17, H=32, W=48, B=1, seed=1):
    return torch.rand(B, 3, T, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_shapes_and_strides():
    vae = tiny_vae()
    assert (vae.spatial_stride, vae.temporal_stride, vae.latent_channels) == (8, 4, 4)
    assert vae.latent_shape(17, 32, 48) == (4, 5, 4, 6)
    with torch.no_grad():
        post = vae.encode(video(B=2))
        assert post.mean.shape == post.logvar.shape == (2, 4, 5, 4, 6)
        assert vae.decode(post.sample()).shape == (2, 3, 17, 32, 48)
        assert vae.encode(video(T=1)).mean.shape == (1, 4, 1, 4, 6)  # an image is a 1-frame video
        assert vae.decode(torch.zeros(1, 4, 1, 4, 6)).shape == (1, 3, 1, 32, 48)
        x_hat, post = vae(video(T=5), sample=False)
        assert x_hat.shape == (1, 3, 5, 32, 48) and post.mean.shape == (1, 4, 2, 4, 6)


def test_bad_sizes_are_clear_errors():
    vae = tiny_vae()
    with pytest.raises(ValueError, match="frames must be 4k\\+1.*T=16"):
        vae.encode(video(T=16))
    with pytest.raises(ValueError, match="multiples of 8, got 36x48"):
        vae.encode(video(H=36))
    with pytest.raises(ValueError, match="tile_frames must be a positive multiple of 4"):
        vae.encode(video(), tile_frames=6)


@pytest.mark.parametrize("model", MODELS)
@torch.no_grad()
def test_encoder_and_decoder_are_causal_in_time(model):
    vae = tiny_vae(**MODELS[model])
    x = video(W=64)
    x2 = x.clone()
    x2[:, :, 8] += 0.5  # frame 8 lies in latent frame 2 (frames 5..8)
    z, z2 = vae.encode(x).mean, vae.encode(x2).mean
    assert torch.equal(z[:, :, :2], z2[:, :, :2])  # latents 0 (frame 0) and 1 (frames 1..4): exactly equal
    assert not torch.allclose(z[:, :, 2], z2[:, :, 2])
    z3 = z.clone()
    z3[:, :, 2] += 1.0  # latent 2 decodes to frames 5..8
    y, y3 = vae.decode(z), vae.decode(z3)
    assert torch.equal(y[:, :, :5], y3[:, :, :5])
    assert not torch.allclose(y[:, :, 5:9], y3[:, :, 5:9])


@pytest.mark.parametrize("model", MODELS)
@torch.no_grad()
def test_first_frame_is_encoded_on_its_own(model):
    vae = tiny_vae(**MODELS[model])
    x = video(W=64)
    torch.testing.assert_close(vae.encode(x[:, :, :1]).mean, vae.encode(x).mean[:, :, :1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", MODELS)
@torch.no_grad()
def test_temporal_chunks_equal_one_pass(model):
    vae = tiny_vae(**MODELS[model])
    x = video(T=17, H=32, W=32)
    post = vae.encode(x)
    for tf in (4, 8):
        torch.testing.assert_close(vae.encode(x, tile_frames=tf).mean, post.mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(vae.decode(post.mean, tile_frames=tf), vae.decode(post.mean), atol=1e-5, rtol=0)


def test_tile_blending_is_exact_for_local_maps():
    # The blending itself: for maps with no reach across pixels (or 8x8 blocks), tiles == one pass.
    x = torch.randn(1, 2, 3, 48, 80)  # (B, T, C, H, W)
    torch.testing.assert_close(_blend_tiles(lambda t: 2 * t + 1, x, 32, 16, 1.0), 2 * x + 1)

    def pool(t):  # like the encoder: (.., h, w) -> (.., h/8, w/8)
        return F.avg_pool2d(t.flatten(0, 1), 8).unflatten(0, t.shape[:2])

    def up(t):  # like the decoder: (.., h, w) -> (.., 8h, 8w)
        return F.interpolate(t.flatten(0, 1), scale_factor=8.0).unflatten(0, t.shape[:2])

    torch.testing.assert_close(_blend_tiles(pool, x, 32, 16, 1 / 8), pool(x))
    torch.testing.assert_close(_blend_tiles(up, x[..., :6, :10], 4, 2, 8.0), up(x[..., :6, :10]))


@pytest.mark.parametrize("model, W, tile, overlap", [("f8", 80, 32, 16), ("f8-dcae", 80, 32, 16),
                                                     ("f32-dcae", 96, 64, 32)])
@torch.no_grad()
def test_spatial_tiles_run_and_a_big_tile_is_one_pass(model, W, tile, overlap):
    # Tiles of a real model differ from one pass where the receptive field leaves the tile (and,
    # with GroupNorm, through per-tile statistics): the trained model's figure is in docs/autoencoder.md.
    vae = tiny_vae(**MODELS[model])
    x = video(T=5, H=64, W=W)
    full = vae.encode(x).mean
    tiled = vae.encode(x, tile_size=tile, tile_overlap=overlap).mean
    assert tiled.shape == full.shape and torch.isfinite(tiled).all()
    y_t = vae.decode(full, tile_size=tile, tile_overlap=overlap)
    assert y_t.shape == (1, 3, 5, 64, W) and torch.isfinite(y_t).all()
    assert torch.equal(vae.encode(x, tile_size=W).mean, full)


def test_save_and_load(tmp_path):
    vae = tiny_vae()
    vae.config.scaling_factor, vae.config.shift_factor = 0.5, 0.25
    vae.save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["scaling_factor"] == 0.5
    back = CausalVideoVAE.from_pretrained(tmp_path / "vae")
    x = video(T=5)
    with torch.no_grad():
        assert torch.equal(back.encode(x).mean, vae.encode(x).mean)
    z = torch.randn(1, 4, 2, 4, 6)
    assert torch.equal(back.normalize(z), (z - 0.25) * 0.5)
    torch.testing.assert_close(back.denormalize(back.normalize(z)), z)
    with pytest.raises(FileNotFoundError, match="no VAE folder"):
        CausalVideoVAE.from_pretrained(tmp_path / "nothing")
    (tmp_path / "vae" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks"):
        CausalVideoVAE.from_pretrained(tmp_path / "vae")


def test_diagonal_gaussian():
    moments = torch.cat([torch.zeros(2, 3, 1, 2, 2), torch.zeros(2, 3, 1, 2, 2)], dim=1)
    post = DiagonalGaussian(moments)
    assert torch.equal(post.kl(), torch.zeros(2))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(post.sample(g()), post.sample(g()))
    assert torch.equal(post.mode(), post.mean)


def tiny_train_cfg(tmp_path, steps, **kw) -> VAETrainConfig:
    base = {"model": TINY, "data": {"width": 32, "height": 32, "frames": 5, "batch_size": 2},
            "steps": steps, "log_every": 1, "eval_clips": 0, "checkpoint_every": 2, "scale_clips": 2,
            "out_dir": str(tmp_path), "threads": 0, "precision": "fp32", "optim": {"warmup_steps": 1}}
    return load_config(VAETrainConfig, base=base, overrides=[f"{k}={v}" for k, v in kw.items()])


def test_trainer_saves_and_resumes_to_the_same_weights(tmp_path):
    straight = train_vae(tiny_train_cfg(tmp_path / "a", 4), progress=False, log=lambda *a: None)
    for f in ("config.json", "model.safetensors", "train_config.json", "log.jsonl", "checkpoint/state.json",
              "checkpoint/optimizer.safetensors"):
        assert (tmp_path / "a" / f).is_file(), f
    train_vae(tiny_train_cfg(tmp_path / "b", 2), progress=False, log=lambda *a: None)  # "killed" at step 2
    resumed = train_vae(tiny_train_cfg(tmp_path / "b", 4), progress=False, log=lambda *a: None)
    for (k, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, msg=k)
    assert straight.config.scaling_factor == resumed.config.scaling_factor != 1.0
    res = evaluate_vae(straight, num_clips=2, width=32, height=32, frames=5)
    assert set(res) >= {"psnr", "ssim", "judge_pass"} and 0 <= res["judge_pass"] <= 1


def test_decoder_fine_tune_keeps_the_latent_space(tmp_path):
    base = train_vae(tiny_train_cfg(tmp_path / "a", 2), progress=False, log=lambda *a: None)
    tuned = train_vae(tiny_train_cfg(tmp_path / "d", 3, init_from=str(tmp_path / "a"), train_encoder="false",
                                     seed=1), progress=False, log=lambda *a: None)
    for (k, p), q in zip(base.encoder.state_dict().items(), tuned.encoder.state_dict().values()):
        assert torch.equal(p, q), k  # the encoder, so the latents, are bit-identical
    assert (tuned.config.scaling_factor, tuned.config.shift_factor) == (base.config.scaling_factor,
                                                                         base.config.shift_factor)
    assert any(not torch.equal(p, q) for p, q in zip(base.decoder.parameters(), tuned.decoder.parameters()))
    with pytest.raises(ValueError, match="set init_from"):
        train_vae(tiny_train_cfg(tmp_path / "x", 1, train_encoder="false"), progress=False, log=lambda *a: None)


def test_edge_mask_marks_outlines_and_weights_the_loss():
    x = torch.full((1, 3, 2, 16, 16), -0.2)
    x[:, 0, :, 4:12, 4:12] = 0.9  # an 8x8 red square
    m = edge_mask(x)
    assert m.shape == (1, 1, 2, 16, 16)
    assert m[0, 0, 0, 4, 4] == 1 and m[0, 0, 0, 3, 5] == 1 and m[0, 0, 0, 2, 5] == 1  # on, beside, 1 px out
    assert m[0, 0, 0, 1, 5] == 0 and m[0, 0, 0, 15, 15] == 0 and m[0, 0, 0, 7, 7] == 0  # far, flat inside
    assert edge_mask(torch.zeros(1, 3, 1, 8, 8)).sum() == 0
    # With edge_weight, an error on an outline costs more than the same error on flat background.
    vae = CausalVideoVAE(VAEConfig(base_channels=8, channel_mult=(1, 2), spatial_down=(True,),
                                   temporal_down=(True,), norm_groups=4))
    x = torch.full((1, 3, 5, 16, 16), -0.2)
    x[:, 0, :, 4:8, 4:8] = 0.9
    base = load_config(VAETrainConfig, base={"edge_weight": 0.0})
    edged = load_config(VAETrainConfig, base={"edge_weight": 4.0})
    torch.manual_seed(0)
    with torch.no_grad():
        plain, _ = vae_loss(vae, x, base, torch.Generator().manual_seed(0))
        weighted, stats = vae_loss(vae, x, edged, torch.Generator().manual_seed(0))
    assert weighted.item() != pytest.approx(plain.item()) and stats["psnr"] > 0


def test_config_file_and_data():
    cfg = load_config(VAETrainConfig, "configs/vae-f8t4.toml")
    assert cfg.model.patch_size * 2 ** sum(cfg.model.spatial_down) == 8 and sum(cfg.model.temporal_down) == 2
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(VAETrainConfig, "configs/vae-f8t4.toml", overrides=["model.latent_chanels=8"])
    small = load_config(VAETrainConfig, base={"data": {"width": 32, "height": 32, "frames": 5, "batch_size": 2}})
    a, b = next(vae_batches(small)), next(vae_batches(small))
    assert a.shape == (2, 3, 5, 32, 32) and torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(next(vae_batches(small, start_step=1)), a)
    assert min(train_seed(0, s, i) for s in range(50) for i in range(4)) >= 2 ** 62 > EVAL_SEED_BASE + 10 ** 6


def test_batches_from_a_metadata_csv(tmp_path):
    from kinema.data.video_io import write_video
    from kinema.world import make_clip

    rows = ["path,text"]
    for i in range(2):
        clip = make_clip(i, 32, 32, 7)
        write_video(tmp_path / f"v{i}.mp4", clip.frames, fps=8)
        rows.append(f"v{i}.mp4,{clip.text.replace(',', ' ')}")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    cfg = load_config(VAETrainConfig, base={"data": {"width": 32, "height": 32, "frames": 5, "batch_size": 3,
                                                     "metadata": str(tmp_path / "metadata.csv")}})
    x = next(vae_batches(cfg))
    assert x.shape == (3, 3, 5, 32, 32) and x.min() >= -1 and x.max() <= 1
    bad = load_config(VAETrainConfig, base={"data": {"width": 48, "height": 32, "frames": 5,
                                                     "metadata": str(tmp_path / "metadata.csv")}})
    with pytest.raises(ValueError, match="training needs 32x48"):
        next(vae_batches(bad))


def test_end_of_training_eval_uses_eval_frames_and_fixed_seeds(tmp_path, monkeypatch):
    import kinema.autoencoder.train as vt

    calls = []
    monkeypatch.setattr(vt, "evaluate_vae", lambda vae, *a, **k: calls.append(a) or {"psnr": 1.0})
    vt.train_vae(tiny_train_cfg(tmp_path / "a", 1, eval_clips=3, eval_frames=9, seed=5), progress=False,
                 log=lambda *a: None)
    (clips, seed, width, height, frames), = calls
    assert (clips, seed, frames) == (3, 0, 9) and (width, height) == (32, 32)  # not the 5 training frames
    assert (tmp_path / "a" / "eval.json").is_file()
