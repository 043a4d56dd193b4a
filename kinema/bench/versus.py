"""Our DiT and VAE side by side with the diffusers models a user would otherwise pick (Wan 2.1's
`WanTransformer3DModel` and `AutoencoderKLWan`), configured to the same size. Random weights:
speed does not depend on them.

DiT -> WanTransformer3DModel (docs/BENCHMARKS.md has the table):
  hidden_size            -> num_attention_heads x attention_head_dim (same heads, same head dim)
  depth                  -> num_layers
  mlp_hidden             -> ffn_dim
  patch_size, in_channels-> patch_size, in_channels = out_channels (so the same token count)
  text_dim               -> text_dim; the same text length is fed to both
  Same block recipe: adaLN-modulated self-attention with 3D RoPE and QK RMS-norm, cross-attention
  to the text, GELU(tanh) MLP. Differences: Wan computes one timestep projection shared by all
  blocks (+ a learned per-block table) where ours has an adaLN Linear per block, and ours adds a
  pooled-text vector to the timestep embedding; both are per-sample, not per-token, costs.

VAE -> AutoencoderKLWan, matched to the same input, latent shape and channel widths:
  base_channels, channel_mult -> base_dim, dim_mult (the same widths per level)
  num_res_blocks              -> num_res_blocks (both decoders use one more per level)
  temporal_down               -> temperal_downsample
  latent_channels             -> z_dim
  Wan halves space at every level, so to reach our spatial stride it patchifies
  stride / 2^levels pixels first (Wan 2.2's `patch_size`; 2x2 for our 4x8x8 recipe, whose 4x4
  patchify + one spatial halving gives 8). Wan's convs are full 3x3x3 where ours are (2+1)D, and
  Wan encodes 1 + 4 + 4 ... frames and decodes one latent frame per call (its causal cache)
  where ours runs the clip in one pass.
"""
from __future__ import annotations

import math

import torch

from .timing import interleaved, median


def have_diffusers() -> str | None:
    """None if diffusers' Wan models import, else why not (one line)."""
    try:
        from diffusers import AutoencoderKLWan, WanTransformer3DModel  # noqa: F401
    except ImportError as e:
        return f"diffusers is not installed ({e.msg}); pip install 'kinema[bench]'"
    return None


def wan_transformer_like(cfg):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(patch_size=tuple(cfg.patch_size), num_attention_heads=cfg.num_heads,
                                 attention_head_dim=cfg.head_dim, in_channels=cfg.in_channels,
                                 out_channels=cfg.in_channels, text_dim=cfg.text_dim, ffn_dim=cfg.mlp_hidden,
                                 num_layers=cfg.depth, cross_attn_norm=True, qk_norm="rms_norm_across_heads")


def wan_vae_like(vae) -> tuple[object | None, str]:
    """(AutoencoderKLWan matched to our VAE, how) or (None, why it cannot be matched)."""
    from diffusers import AutoencoderKLWan

    c = vae.config
    levels = len(c.channel_mult) - 1
    patch = vae.spatial_stride / 2 ** levels
    if patch < 1 or patch != int(patch):
        return None, (f"our spatial stride {vae.spatial_stride} is not 2^{levels} levels x an integer patch: "
                      "Wan halves space at every level")
    patch = int(patch)
    wan = AutoencoderKLWan(base_dim=c.base_channels, z_dim=c.latent_channels, dim_mult=list(c.channel_mult),
                           num_res_blocks=c.num_res_blocks, temperal_downsample=list(c.temporal_down),
                           patch_size=patch if patch > 1 else None, in_channels=3 * patch * patch,
                           out_channels=3 * patch * patch, scale_factor_spatial=vae.spatial_stride,
                           scale_factor_temporal=vae.temporal_stride)
    how = f"base_dim {c.base_channels}, dim_mult {list(c.channel_mult)}, {c.num_res_blocks} res block(s), patch {patch}"
    return wan, how


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def compare_dit(dit, batch: int, latent: tuple[int, int, int], text_len: int, repeats: int,
                device: torch.device, autocast: torch.dtype | None) -> dict:
    """Forward + backward of our DiT and the matched Wan transformer on the same inputs."""
    cfg = dit.cfg
    torch.manual_seed(0)
    wan = wan_transformer_like(cfg).to(device).train()
    dit = dit.train()
    x = torch.randn(batch, cfg.in_channels, *latent, device=device)
    t = torch.rand(batch, device=device)
    text = torch.randn(batch, text_len, cfg.text_dim, device=device)
    ctx = lambda: torch.autocast(device.type, dtype=autocast, enabled=autocast is not None)  # noqa: E731

    def ours():
        with ctx():
            v = dit(x, t, text)
        v.float().square().mean().backward()

    def theirs():
        with ctx():
            v = wan(x, t * 1000, text, return_dict=False)[0]  # Wan's timesteps are in [0, 1000]
        v.float().square().mean().backward()

    times = interleaved({"ours": ours, "diffusers": theirs}, repeats, device)
    dit.zero_grad(set_to_none=True)
    ours_s, theirs_s = median(times["ours"]), median(times["diffusers"])
    tokens = batch * math.prod(s // p for s, p in zip(latent, cfg.patch_size))
    return {"what": "forward + backward", "batch": batch, "tokens": tokens, "text_len": text_len,
            "ours_params": _params(dit), "diffusers_params": _params(wan), "diffusers_model": "WanTransformer3DModel",
            "ours_s": ours_s, "diffusers_s": theirs_s, "ratio": ours_s / theirs_s,
            "ours_runs_s": times["ours"], "diffusers_runs_s": times["diffusers"]}


def compare_vae(vae, batch: int, frames: int, height: int, width: int, repeats: int, device: torch.device,
                autocast: torch.dtype | None) -> dict:
    """Encode + decode (posterior mode, no grad) of our VAE and the matched AutoencoderKLWan."""
    torch.manual_seed(0)
    wan, how = wan_vae_like(vae)
    if wan is None:
        return {"skipped": how}
    wan = wan.to(device).eval()
    x = torch.rand(batch, 3, frames, height, width, device=device) * 2 - 1
    ctx = lambda: torch.autocast(device.type, dtype=autocast, enabled=autocast is not None)  # noqa: E731

    @torch.no_grad()
    def ours():
        with ctx():
            return vae.decode(vae.encode(x).mode())

    @torch.no_grad()
    def theirs():
        with ctx():
            return wan.decode(wan.encode(x).latent_dist.mode()).sample

    with torch.no_grad(), ctx():
        z_ours, z_wan = vae.encode(x).mode(), wan.encode(x).latent_dist.mode()
    if z_ours.shape != z_wan.shape:
        return {"skipped": f"latent shapes differ: ours {tuple(z_ours.shape)}, Wan {tuple(z_wan.shape)}"}
    times = interleaved({"ours": ours, "diffusers": theirs}, repeats, device)
    ours_s, theirs_s = median(times["ours"]), median(times["diffusers"])
    return {"what": "encode + decode", "batch": batch, "clip": [frames, height, width],
            "latent": list(z_ours.shape[1:]), "diffusers_config": how, "diffusers_model": "AutoencoderKLWan",
            "ours_params": _params(vae), "diffusers_params": _params(wan),
            "ours_s": ours_s, "diffusers_s": theirs_s, "ratio": ours_s / theirs_s,
            "ours_runs_s": times["ours"], "diffusers_runs_s": times["diffusers"]}
