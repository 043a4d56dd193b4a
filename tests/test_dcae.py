"""DC-AE-style deep-compression autoencoders (VAEConfig.shortcut = "space_to_channel"): the
shortcut layers against DC-AE's definitions, the shortcut path as an exact identity, the 4x16x16 and
4x32x32 recipes, "none" unchanged, and a DiT with a 1x1x1 patch training on such latents.
Causality, chunking and tiling of shortcut models: tests/test_vae.py (parametrized over MODELS)."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kinema import flow
from kinema.autoencoder import CausalVideoVAE, VAEConfig
from kinema.autoencoder.layers import Downsample, channel_resize, channel_to_space, space_to_channel
from kinema.autoencoder.train import VAETrainConfig
from kinema.config import ConfigError, from_dict, load_config
from kinema.train.config import load_dit_train_config

TINY_F32 = dict(latent_channels=32, patch_size=4, base_channels=8, channel_mult=(1, 2, 4, 8),
                spatial_down=(True, True, True), temporal_down=(True, True, False), norm_groups=4,
                shortcut="space_to_channel")


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_shortcut_layers_are_dcae_s():
    x = rand(2, 5, 6, 4, 8)  # (B, T, C, H, W)
    # DC-AE's PixelUnshuffleChannelAveragingDownSampleLayer and ChannelDuplicatingPixelUnshuffleUpSampleLayer,
    # written out per frame on (N, C, H, W)
    frames = x.flatten(0, 1)
    down = F.pixel_unshuffle(frames, 2).view(10, 12, 2, 2, 4).mean(dim=2)  # 24 -> 12 channels
    assert torch.equal(channel_resize(space_to_channel(x, True, False, True), 12), down.unflatten(0, (2, 5)))
    up = F.pixel_shuffle(frames.repeat_interleave(2, dim=1), 2)  # 6 -> 12 -> 3 channels at 2x
    assert torch.equal(channel_to_space(channel_resize(x, 12), True, False, True), up.unflatten(0, (2, 5)))
    # Time is paired causally: (0, 0), (1, 2), (3, 4): 2k+1 -> k+1, output 0 holds frame 0 only
    t = space_to_channel(x, False, True, first_chunk=True)
    assert t.shape == (2, 3, 12, 4, 8)
    for j, (a, b) in enumerate([(0, 0), (1, 2), (3, 4)]):
        assert torch.equal(t[:, j], torch.cat([x[:, a], x[:, b]], dim=1))
    assert torch.equal(space_to_channel(x[:, 1:], False, True, first_chunk=False), t[:, 1:])  # a continuation chunk
    # channel_to_space undoes space_to_channel exactly (no averaging in between): 2k+1 frames back
    for space, time in ((True, False), (False, True), (True, True)):
        assert torch.equal(channel_to_space(space_to_channel(x, space, time, True), space, time, True), x)
    with pytest.raises(ValueError, match="from 6 to 4 channels"):
        channel_resize(x, 4)
    with pytest.raises(ValueError, match="from 64 to 48 channels"):  # 8 x (2x2 pixels x 2 frames) -> 48
        Downsample(8, True, True, cout=48, shortcut=True)


@torch.no_grad()
def test_shortcut_path_is_an_exact_identity_on_smooth_features():
    """DC-AE's point: with every learned conv of the down/up stack and the bottleneck at zero, the
    encoder's features go to the latent and back unchanged (for features constant over the cells
    the shortcuts average), so the convs only learn a residual on top of that."""
    vae = CausalVideoVAE(VAEConfig(**TINY_F32))
    for part in (vae.encoder.blocks, vae.decoder.blocks, vae.encoder.conv_out, vae.decoder.conv_in):
        for p in part.parameters():
            p.zero_()
    cells = rand(1, 5, 8, 2, 3)  # (B, T', C, h, w): one value per latent cell and channel
    frames = torch.cat([cells[:, :1], cells[:, 1:].repeat_interleave(4, dim=1)], dim=1)  # frame 0, then 4 each
    h = frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)  # (1, 17, 8, 16, 24): the features
    latent = channel_resize(vae.encoder.blocks(h), 32)  # (1, 5, 32, 2, 3)
    assert latent.shape == (1, 5, 32, 2, 3)
    back = vae.decoder.blocks(vae.decoder.conv_in(latent) + channel_resize(latent, 64))
    assert torch.equal(back, h)
    # ...and the encoder adds exactly that average of its features to the posterior mean
    x = rand(1, 3, 9, 64, 96)
    feats = vae.encoder.blocks(vae.encoder.conv_in(F.pixel_unshuffle(x.transpose(1, 2).flatten(0, 1), 4)
                                                   .unflatten(0, (1, 9))))
    torch.testing.assert_close(vae.encode(x).mean, channel_resize(feats, 32).transpose(1, 2), atol=0, rtol=0)


@pytest.mark.parametrize("name, stride, channels", [("vae-f16t4", 16, 64), ("vae-f32t4", 32, 128)])
@torch.no_grad()
def test_config_files_give_their_compression(name, stride, channels):
    cfg = load_config(VAETrainConfig, f"configs/{name}.toml")
    assert cfg.model.shortcut == "space_to_channel" and cfg.out_dir == f"runs/{name}" and cfg.threads == 1
    assert (cfg.data.width, cfg.data.height, cfg.data.frames) == (128, 128, 9)
    full = CausalVideoVAE(cfg.model)
    assert (full.spatial_stride, full.temporal_stride, full.latent_channels) == (stride, 4, channels)
    assert full.latent_shape(17, 128, 128) == (channels, 5, 128 // stride, 128 // stride)
    # the same recipe at a tiny width runs end to end
    tiny = load_config(VAETrainConfig, f"configs/{name}.toml", overrides=["model.base_channels=8"])
    vae = CausalVideoVAE(tiny.model).eval()
    post = vae.encode(rand(1, 3, 5, 32, 64).clamp(-1, 1))
    assert post.mean.shape == (1, channels, 2, 32 // stride, 64 // stride)
    assert vae.decode(post.mean).shape == (1, 3, 5, 32, 64)


def test_shortcut_is_a_checked_config_key():
    with pytest.raises(ConfigError, match="expected one of"):
        load_config(VAETrainConfig, "configs/vae-f32t4.toml", overrides=["model.shortcut=pixel"])
    bad = load_config(VAETrainConfig, "configs/vae-f32t4.toml", overrides=["model.latent_channels=96"])
    with pytest.raises(ValueError, match="channel shortcut from 256 to 96 channels"):
        CausalVideoVAE(bad.model)  # at build time, in words, not a reshape error mid-forward


@torch.no_grad()
def test_shortcut_none_is_the_network_trained_before_it():
    # A folder saved before the option (no "shortcut" key) loads as "none", strictly, with its weights.
    shipped = json.loads(Path("kinema/weights/default/vae/config.json").read_text())
    assert "shortcut" not in shipped and from_dict(VAEConfig, shipped).shortcut == "none"
    CausalVideoVAE.from_pretrained("kinema/weights/default/vae")  # load_state_dict is strict
    # Same weights from the same seed and the same outputs as the code before the option
    # (figures from commit 6725506, this recipe's VAEConfig() defaults, fp32; summation order aside).
    torch.manual_seed(0)
    vae = CausalVideoVAE(VAEConfig()).eval()
    assert vae.num_params() == 2_804_904
    for p in vae.parameters():
        p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mean = vae.encode(x).mean.double()
    y = vae.decode(vae.encode(x).mean).double()
    assert mean.abs().sum().item() == pytest.approx(638.4723467, rel=1e-4)
    assert mean.pow(2).sum().item() == pytest.approx(833.2295804, rel=1e-4)
    assert y.abs().sum().item() == pytest.approx(12736.552298, rel=1e-4)
    assert y.pow(2).sum().item() == pytest.approx(10228.815292, rel=1e-4)


def test_token_counts_and_timestep_shift_of_the_pairings():
    """The table in docs/autoencoder.md: DiT tokens per 17-frame clip and the automatic shift."""
    def tokens(stride, patch, size):
        return 5 * (size // stride // patch) ** 2

    table = {(8, 2, 64): 80, (8, 2, 128): 320, (8, 2, 256): 1280, (16, 1, 128): 320, (16, 1, 256): 1280,
             (32, 1, 128): 80, (32, 1, 256): 320}
    for (stride, patch, size), n in table.items():
        assert tokens(stride, patch, size) == n
    assert flow.timestep_shift_for(80) == 1.0 and flow.timestep_shift_for(320) == pytest.approx(math.sqrt(1.25))
    assert flow.timestep_shift_for(1280) == pytest.approx(math.sqrt(5))
    cfg = load_dit_train_config("configs/dit-t-f32.toml")
    assert cfg.dit.patch_size == (1, 1, 1) and cfg.vae == "runs/vae-f32t4" and cfg.data.buckets == [(17, 128, 128)]
    assert cfg.out_dir == "runs/dit-t-f32" and cfg.dit.hidden_size == 192  # the dit-t preset underneath


def test_a_patch_1_dit_trains_on_f32_latents(tmp_path):
    from kinema.train.dit import train_dit

    torch.manual_seed(0)
    CausalVideoVAE(VAEConfig(**TINY_F32)).save_pretrained(tmp_path / "vae")
    cfg = load_dit_train_config("configs/dit-t-f32.toml", [
        f"vae={json.dumps(str(tmp_path / 'vae'))}", f"out_dir={json.dumps(str(tmp_path / 'dit'))}",
        "steps=2", "batch_size=2", "precision=fp32", "preview_every=0", "ckpt_every=2", "log_every=1",
        "threads=0", "dit.hidden_size=48", "dit.depth=1", "dit.num_heads=2",
        "data.buckets=[[5, 64, 64]]", "data.num_clips=2", "optim.warmup_steps=1"])
    summary = train_dit(cfg, progress=False)
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    dit_cfg = json.loads((tmp_path / "dit" / "model" / "dit" / "config.json").read_text())
    assert dit_cfg["patch_size"] == [1, 1, 1] and dit_cfg["in_channels"] == 32  # one token per 32x32 pixels


@torch.no_grad()
def test_f32_tiles_at_256():
    # The documented setting at 256x256: 128 px tiles, 32 px overlap (4x4-cell latent tiles, 1 cell).
    torch.manual_seed(0)
    vae = CausalVideoVAE(VAEConfig(**TINY_F32)).eval()
    x = rand(1, 3, 1, 256, 256).clamp(-1, 1)  # an image: the cheapest 4k+1
    full = vae.encode(x).mean
    tiled = vae.encode(x, tile_size=128, tile_overlap=32).mean
    assert tiled.shape == full.shape == (1, 32, 1, 8, 8) and torch.isfinite(tiled).all()
    y = vae.decode(full, tile_size=128, tile_overlap=32)
    assert y.shape == (1, 3, 1, 256, 256) and torch.isfinite(y).all()
