"""A causal video VAE: 4x8x8 (time x height x width) compression by default, 4x16x16 or 4x32x32
with DC-AE's residual shortcuts (`shortcut = "space_to_channel"`).

    vae = CausalVideoVAE(VAEConfig())
    z = vae.encode(x).sample()        # x (B, 3, 4k+1, H, W) in [-1, 1] -> z (B, 16, k+1, H/8, W/8)
    x_hat = vae.decode(z)             # (B, 3, 4k+1, H, W)
    z_dit = vae.normalize(z)          # (z - shift) * scale: what the diffusion transformer sees

Frame 0 is encoded on its own (causal convs, see layers.py), so a picture is a 1-frame video;
latent frame j >= 1 covers frames 4j-3..4j and depends on no later frame. Design and measured
figures: docs/autoencoder.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import from_dict, to_dict
from ..models.loading import skip_init
from .layers import (Conv, Downsample, ResBlock, Upsample, batch_frames, channel_resize, check_channel_resize,
                     make_norm, unbatch_frames)

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class VAEConfig:
    latent_channels: int = 16
    base_channels: int = 32
    # Space-to-depth on the input, depth-to-space on the output (LTX-Video's VAE patchifies 4x4):
    # the convs never run at full resolution, which is what makes CPU training affordable.
    patch_size: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 4)  # one level each, with a downsample between levels
    num_res_blocks: int = 1  # encoder, per level
    decoder_res_blocks: int | None = None  # per level; None: num_res_blocks + 1 (as the SD VAE)
    spatial_down: tuple[bool, ...] = (True, True)  # which downsamples halve H, W
    temporal_down: tuple[bool, ...] = (True, True)  # which downsamples halve time (2k+1 -> k+1)
    mid_blocks: int = 1
    conv: Literal["2+1d", "3d"] = "2+1d"  # factorised spatial 3x3 + temporal 3, or full 3x3x3
    temporal_kernel: int = 3
    norm: Literal["group", "pixel", "none"] = "group"  # GroupNorm per frame, RMS norm per pixel, or none
    norm_groups: int = 8
    # "space_to_channel": DC-AE's residual autoencoding (Chen et al. 2024; Open-Sora 2.0's Video
    # DC-AE) for deep compression (4x16x16, 4x32x32). Every down/upsampling block adds a
    # parameter-free space-to-channel / channel-to-space shortcut and changes the channel count
    # itself (so the res blocks keep theirs), the posterior mean adds the encoder features averaged
    # down to latent_channels, and the decoder's input conv adds z repeated up to its width.
    # "none" is the plain network (every model trained before this option).
    shortcut: Literal["none", "space_to_channel"] = "none"
    # Latent normalisation (as diffusers' SD3 VAE): z_norm = (z - shift_factor) * scaling_factor,
    # measured on training latents at the end of training so the DiT sees ~unit variance.
    scaling_factor: float = 1.0
    shift_factor: float = 0.0

    def __post_init__(self):
        n = len(self.channel_mult) - 1
        for name in ("spatial_down", "temporal_down"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} needs one entry per downsample ({n} for channel_mult="
                                 f"{self.channel_mult}), got {getattr(self, name)}")


class DiagonalGaussian:
    """The posterior q(z|x) = N(mean, exp(logvar)), kept in fp32. Shapes (B, C, T', h, w)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.float().chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over every latent element, per sample: (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chs = [cfg.base_channels * m for m in cfg.channel_mult]
        kind, kt, g = cfg.conv, cfg.temporal_kernel, cfg.norm_groups
        self.patch, self.latent_channels = cfg.patch_size, cfg.latent_channels
        self.shortcut = cfg.shortcut == "space_to_channel"
        self.conv_in = Conv(3 * self.patch ** 2, chs[0], kind, kt)
        blocks: list[nn.Module] = []
        cin = chs[0]
        for i, ch in enumerate(chs):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cin, ch, kind, g, kt, cfg.norm))
                cin = ch
            if i < len(chs) - 1:
                cout = chs[i + 1] if self.shortcut else ch  # DC-AE: the downsample changes the width
                blocks.append(Downsample(ch, cfg.spatial_down[i], cfg.temporal_down[i], cout, self.shortcut))
                cin = cout
        blocks += [ResBlock(cin, cin, kind, g, kt, cfg.norm) for _ in range(cfg.mid_blocks)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = make_norm(cfg.norm, cin, g)
        self.conv_out = Conv(cin, 2 * cfg.latent_channels, kind, kt)
        if self.shortcut:
            check_channel_resize(cin, cfg.latent_channels)
        # Start the posterior nearly deterministic (std e^-3 ~ 0.05): with logvar ~ 0 the unit-variance
        # sampling noise drowns the young latents and reconstruction stalls for hundreds of steps.
        last = self.conv_out.temporal or self.conv_out.spatial
        with torch.no_grad():
            last.conv.bias[cfg.latent_channels:] = -6.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, 3, H, W) -> (B, T', 2C, h, w)
        B = x.shape[0]
        x = unbatch_frames(F.pixel_unshuffle(batch_frames(x), self.patch), B)  # (B, T, 3p^2, H/p, W/p)
        h = self.blocks(self.conv_in(x))  # (B, T', ch, h, w)
        moments = self.conv_out(F.silu(self.norm_out(h)))  # (B, T', 2C, h, w)
        if self.shortcut:  # DC-AE: mean += features averaged down to C channels; logvar has no shortcut
            mean, logvar = moments.chunk(2, dim=2)
            moments = torch.cat([mean + channel_resize(h, self.latent_channels), logvar], dim=2)
        return moments


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chs = [cfg.base_channels * m for m in cfg.channel_mult]
        kind, kt, g = cfg.conv, cfg.temporal_kernel, cfg.norm_groups
        n_blocks = cfg.num_res_blocks + 1 if cfg.decoder_res_blocks is None else cfg.decoder_res_blocks
        self.shortcut = cfg.shortcut == "space_to_channel"
        cin = chs[-1]
        self.conv_in = Conv(cfg.latent_channels, cin, kind, kt)
        if self.shortcut:
            check_channel_resize(cfg.latent_channels, cin)
        blocks: list[nn.Module] = [ResBlock(cin, cin, kind, g, kt, cfg.norm) for _ in range(cfg.mid_blocks)]
        for i in reversed(range(len(chs))):
            for _ in range(n_blocks):
                blocks.append(ResBlock(cin, chs[i], kind, g, kt, cfg.norm))
                cin = chs[i]
            if i > 0:
                cout = chs[i - 1] if self.shortcut else cin  # DC-AE: the upsample changes the width
                blocks.append(Upsample(cin, cfg.spatial_down[i - 1], cfg.temporal_down[i - 1], cout, self.shortcut))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = make_norm(cfg.norm, cin, g)
        self.patch = cfg.patch_size
        self.conv_out = Conv(cin, 3 * self.patch ** 2, kind, kt)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, T', C, h, w) -> (B, T, 3, H, W)
        B = z.shape[0]
        h = self.conv_in(z)  # (B, T', ch, h, w)
        if self.shortcut:  # DC-AE: + z with its channels repeated up to the width
            h = h + channel_resize(z, h.shape[2])
        x = self.conv_out(F.silu(self.norm_out(self.blocks(h))))  # (B, T, 3p^2, H/p, W/p)
        return unbatch_frames(F.pixel_shuffle(batch_frames(x), self.patch), B)


def _tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of length `tile` covering 0..n, neighbours overlapping by >= `overlap`."""
    if n <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def _ramp(length: int, overlap: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """1D blending weights: linear ramps over `overlap` cells on the sides that have a neighbour."""
    w = torch.ones(length)
    if overlap > 0:
        r = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        if fade_in:
            w[:overlap] = torch.minimum(w[:overlap], r)
        if fade_out:
            w[length - overlap:] = torch.minimum(w[length - overlap:], r.flip(0))
    return w


def _blend_tiles(fn, x: torch.Tensor, tile: int, overlap: int, scale_out: float) -> torch.Tensor:
    """Apply `fn` to overlapping spatial tiles of x (B, T, C, H, W) and blend the results.

    `tile`/`overlap` are in units of the *input* grid; fn maps an (h, w) tile to (h*s, w*s)."""
    H, W = x.shape[-2:]
    ys, xs = _tile_starts(H, tile, overlap), _tile_starts(W, tile, overlap)
    out = weight = None
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, H), min(tile, W)
            y = fn(x[..., y0:y0 + th, x0:x0 + tw])  # (B, T', C', th*s, tw*s)
            if out is None:
                out = y.new_zeros(*y.shape[:-2], int(H * scale_out), int(W * scale_out))
                weight = torch.zeros(int(H * scale_out), int(W * scale_out), dtype=y.dtype)
            oh, ow = y.shape[-2:]
            o = int(overlap * scale_out)
            wy = _ramp(oh, o, y0 > 0, y0 + th < H)
            wx = _ramp(ow, o, x0 > 0, x0 + tw < W)
            w2 = (wy[:, None] * wx[None, :]).to(y.dtype)  # (oh, ow)
            Y0, X0 = int(y0 * scale_out), int(x0 * scale_out)
            out[..., Y0:Y0 + oh, X0:X0 + ow] += y * w2
            weight[Y0:Y0 + oh, X0:X0 + ow] += w2
    return out / weight


class CausalVideoVAE(nn.Module):
    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder, self.decoder = Encoder(self.config), Decoder(self.config)

    # ----- strides and shapes -----
    @property
    def spatial_stride(self) -> int:
        return self.config.patch_size * 2 ** sum(bool(s) for s in self.config.spatial_down)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(bool(t) for t in self.config.temporal_down)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', h, w) of the latent of a (T, H, W) video."""
        self._check_video_size(num_frames, height, width)
        s, t = self.spatial_stride, self.temporal_stride
        return (self.latent_channels, (num_frames - 1) // t + 1, height // s, width // s)

    def _check_video_size(self, T: int, H: int, W: int) -> None:
        t, s = self.temporal_stride, self.spatial_stride
        if T < 1 or (T - 1) % t:
            raise ValueError(f"frames must be {t}k+1 (1, {t + 1}, {2 * t + 1}, ...), got T={T}")
        if H % s or W % s:
            raise ValueError(f"height and width must be multiples of {s}, got {H}x{W}")

    # ----- streaming (chunked causal) inference -----
    @contextmanager
    def _streaming(self):
        mods = [m for m in self.modules() if hasattr(m, "stream_on")]
        for m in mods:
            m.stream_on()
        try:
            yield
        finally:
            for m in mods:
                m.stream_off()

    def _run_chunked(self, net: nn.Module, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
        """net over x (B, T, C, H, W) in time chunks: [0, chunk] then `chunk` frames at a time.

        Every causal conv carries its last input frames to the next chunk, so the result equals
        one pass over the whole video (up to float summation order)."""
        T = x.shape[1]
        if chunk is None or T <= chunk + 1:
            return net(x)
        bounds = [0, chunk + 1] + list(range(chunk + 1 + chunk, T, chunk)) + [T]
        bounds = sorted(set(bounds))
        with self._streaming():
            return torch.cat([net(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])], dim=1)

    # ----- encode / decode -----
    def encode(self, x: torch.Tensor, tile_frames: int | None = None, tile_size: int | None = None,
               tile_overlap: int | None = None) -> DiagonalGaussian:
        """x (B, 3, T, H, W) in [-1, 1] -> posterior over z (B, C, T', H/s, W/s), s = spatial_stride.

        tile_frames: encode 1 + tile_frames frames, then tile_frames at a time (a multiple of the
        temporal stride), carrying causal context: same result as untiled. tile_size: encode
        overlapping spatial tiles of tile_size px (overlap tile_overlap, default tile_size/4),
        blended linearly: close to untiled, not equal (GroupNorm statistics are per tile)."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a video (B, 3, T, H, W), got shape {tuple(x.shape)}")
        B, _, T, H, W = x.shape
        self._check_video_size(T, H, W)
        t, s = self.temporal_stride, self.spatial_stride
        chunk = self._check_tiles(tile_frames, tile_size, t, s)
        h = x.permute(0, 2, 1, 3, 4)  # (B, T, 3, H, W)

        def enc(v):
            return self._run_chunked(self.encoder, v, chunk)

        if tile_size is not None and (H > tile_size or W > tile_size):
            ov = self._overlap(tile_size, tile_overlap)
            moments = _blend_tiles(enc, h, tile_size, ov - ov % s, 1.0 / s)
        else:
            moments = enc(h)  # (B, T', 2C, h, w)
        return DiagonalGaussian(moments.permute(0, 2, 1, 3, 4))

    def decode(self, z: torch.Tensor, tile_frames: int | None = None, tile_size: int | None = None,
               tile_overlap: int | None = None) -> torch.Tensor:
        """z (B, C, T', h, w) -> x_hat (B, 3, t*(T'-1)+1, s*h, s*w); tiling arguments in *pixels* and
        *frames*, as for encode."""
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected a latent (B, {self.latent_channels}, T', h, w), got {tuple(z.shape)}")
        t, s = self.temporal_stride, self.spatial_stride
        chunk = self._check_tiles(tile_frames, tile_size, t, s)
        h = z.permute(0, 2, 1, 3, 4)  # (B, T', C, h, w)

        def dec(v):
            return self._run_chunked(self.decoder, v, None if chunk is None else chunk // t)

        H, W = z.shape[-2] * s, z.shape[-1] * s
        if tile_size is not None and (H > tile_size or W > tile_size):
            ov = self._overlap(tile_size, tile_overlap)
            out = _blend_tiles(dec, h, tile_size // s, ov // s, float(s))
        else:
            out = dec(h)  # (B, T, 3, H, W)
        return out.permute(0, 2, 1, 3, 4)

    def _overlap(self, tile_size: int, tile_overlap: int | None) -> int:
        ov = tile_size // 4 if tile_overlap is None else tile_overlap
        if not 0 <= ov < tile_size:
            raise ValueError(f"tile_overlap must be in [0, tile_size={tile_size}), got {ov}")
        return ov

    @staticmethod
    def _check_tiles(tile_frames: int | None, tile_size: int | None, t: int, s: int) -> int | None:
        if tile_frames is not None and (tile_frames < t or tile_frames % t):
            raise ValueError(f"tile_frames must be a positive multiple of {t}, got {tile_frames}")
        if tile_size is not None and (tile_size < s or tile_size % s):
            raise ValueError(f"tile_size must be a positive multiple of {s}, got {tile_size}")
        return tile_frames

    def forward(self, x: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """(reconstruction (B, 3, T, H, W), posterior)."""
        post = self.encode(x)
        z = post.sample(generator) if sample else post.mode()
        return self.decode(z), post

    # ----- latent normalisation -----
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.config.scaling_factor + self.config.shift_factor

    # ----- files -----
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """directory/config.json + directory/model.safetensors (each written atomically)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp_cfg, tmp_w = d / (CONFIG_NAME + ".tmp"), d / (WEIGHTS_NAME + ".tmp")
        tmp_cfg.write_text(json.dumps(to_dict(self.config), indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(tmp_w), metadata={"format": "pt", "class": "CausalVideoVAE"})
        os.replace(tmp_w, d / WEIGHTS_NAME)
        os.replace(tmp_cfg, d / CONFIG_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "CausalVideoVAE":
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"no VAE folder at '{d}' (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (d / n).is_file()]
        if missing:
            raise FileNotFoundError(f"VAE folder '{d}' lacks {missing} (save it with save_pretrained)")
        cfg = from_dict(VAEConfig, json.loads((d / CONFIG_NAME).read_text()))
        with skip_init():  # every tensor comes from the file (strict load)
            vae = cls(cfg)
        vae.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
        return vae.eval()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def replace_config(vae: CausalVideoVAE, **changes) -> None:
    """Update fields of vae.config in place (e.g. the measured scaling/shift factors)."""
    vae.config = dataclasses.replace(vae.config, **changes)
