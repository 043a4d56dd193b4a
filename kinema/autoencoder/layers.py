"""Building blocks of the causal video VAE.

Inside the network a video is laid out `(B, T, C, H, W)`, so that every spatial operation is a
plain 2D op on the free view `(B*T, C, H, W)` and a temporal convolution is a 2D convolution over
`K` time-shifted copies stacked on the channel axis. One primitive, `CausalConv`, covers all cases:

- `kt=1, ks=3`: a spatial 3x3 conv applied to every frame,
- `kt=3, ks=1`: a causal temporal conv (frame t sees t-2, t-1, t),
- `kt=3, ks=3`: a full causal 3x3x3 conv.

Causality: frame t never sees frames after t. The past of frame 0 is frame 0 repeated
(CogVideoX / MAGVIT-v2 style replicate padding), so frame 0 is encoded on its own and an image
is a 1-frame video.

Streaming (chunked encode/decode): with `stream_on()` every temporal conv keeps the last frames it
saw and uses them, instead of padding, as the past of the next chunk; the result is the same as
one pass over the whole video (see vae.py).

Residual autoencoding (DC-AE, Chen et al. 2024; Open-Sora 2.0's Video DC-AE): with `shortcut=True`
every Downsample adds a parameter-free space-to-channel shortcut and every Upsample a
channel-to-space one (`space_to_channel`, `channel_to_space`, `channel_resize` below), so the deep
stack of a 16x or 32x autoencoder only learns a residual on top of a fixed rearrangement.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def batch_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B*T, C, H, W), a view."""
    B, T, C, H, W = x.shape
    return x.reshape(B * T, C, H, W)


def unbatch_frames(x: torch.Tensor, B: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, T, C, H, W), a view."""
    BT, C, H, W = x.shape
    return x.reshape(B, BT // B, C, H, W)


class CausalConv(nn.Module):
    """Causal conv over (B, T, C, H, W): time kernel `kt` (stride `st`), space kernel `ks` (stride `ss`).

    Temporal padding: `kt - 1` copies of frame 0 on the first chunk. Output j then ends at input
    frame `st*j`, so T = st*k + 1 frames give k + 1 outputs and output 0 sees only frame 0.
    (A stride-2 conv that pads `kt - st` would make output 0 see frame 1.) In streaming mode the
    next chunk starts with the last `kt - st` padded inputs of this one instead.
    """

    def __init__(self, cin: int, cout: int, kt: int = 1, ks: int = 3, st: int = 1, ss: int = 1):
        super().__init__()
        self.kt, self.st, self.ss = kt, st, ss
        self.conv = nn.Conv2d(kt * cin, cout, ks, stride=ss, padding=0 if ss > 1 else ks // 2)
        self.spatial_pad = (0, 1, 0, 1) if ss > 1 else None  # SD-VAE style asymmetric pad for stride 2
        self.streaming = False
        self.cache: torch.Tensor | None = None

    def stream_on(self) -> None:
        self.streaming, self.cache = True, None

    def stream_off(self) -> None:
        self.streaming, self.cache = False, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if self.kt > 1:
            if self.streaming and self.cache is not None:
                x = torch.cat([self.cache, x], dim=1)
            else:
                x = torch.cat([x[:, :1]] * (self.kt - 1) + [x], dim=1)  # (B, T+kt-1, C, H, W)
            if self.streaming:
                self.cache = x[:, x.shape[1] - (self.kt - self.st):].clone()  # not a view of the chunk
            T_out = (x.shape[1] - self.kt) // self.st + 1
            taps = [x[:, k:k + self.st * (T_out - 1) + 1:self.st] for k in range(self.kt)]
            x = torch.cat(taps, dim=2)  # (B, T_out, kt*C, H, W): oldest tap first
        h = batch_frames(x)
        if self.spatial_pad is not None:
            h = F.pad(h, self.spatial_pad)
        return unbatch_frames(self.conv(h), B)


def identity_init_temporal(conv: CausalConv) -> None:
    """Make a temporal conv start as the identity on the current frame (pseudo-3D convs, as in
    Make-A-Video): the network begins as a per-frame image model and learns to use time."""
    w = conv.conv.weight  # (cout, kt*cin, ks, ks)
    cout, kcin = w.shape[:2]
    cin = kcin // conv.kt
    assert cout == cin and w.shape[-1] == 1, "identity init needs cin == cout and a 1x1 space kernel"
    with torch.no_grad():
        w.zero_()
        w[:, (conv.kt - 1) * cin:, 0, 0] = torch.eye(cout)
        conv.conv.bias.zero_()


class Conv(nn.Module):
    """A 3x3(x3) causal conv: factorised "(2+1)d" (spatial 3x3, then temporal 3, identity-initialised;
    R(2+1)D, Tran et al. 2018) or full "3d"."""

    def __init__(self, cin: int, cout: int, kind: str = "2+1d", kt: int = 3):
        super().__init__()
        if kind == "2+1d":
            self.spatial = CausalConv(cin, cout, kt=1, ks=3)
            self.temporal = CausalConv(cout, cout, kt=kt, ks=1) if kt > 1 else None
            if self.temporal is not None:
                identity_init_temporal(self.temporal)
        elif kind == "3d":
            self.spatial, self.temporal = CausalConv(cin, cout, kt=kt, ks=3), None
        else:
            raise ValueError(f"conv kind must be '2+1d' or '3d', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.spatial(x)
        return self.temporal(x) if self.temporal is not None else x


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over (C, H, W) of each frame separately: statistics over time would let a frame
    see its future and break causality (and chunked encoding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unbatch_frames(super().forward(batch_frames(x)), x.shape[0])


class PixelRMSNorm(nn.Module):
    """RMS norm over the channels of each pixel (DC-AE's RMSNorm2d; LTX-Video's pixel norm): no
    statistics over space or time, so it is causal and spatial tiles see the same numbers."""

    def __init__(self, ch: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(ch, 1, 1)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W)
        return x * torch.rsqrt(x.pow(2).mean(dim=2, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str, ch: int, groups: int) -> nn.Module:
    if kind == "group":
        return FrameGroupNorm(min(groups, ch), ch)
    if kind == "pixel":
        return PixelRMSNorm(ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'group', 'pixel' or 'none', got {kind!r}")


class ResBlock(nn.Module):
    """norm-SiLU-conv-norm-SiLU-conv plus a (1x1 if channels change) skip, per the SD VAE."""

    def __init__(self, cin: int, cout: int, kind: str, groups: int, kt: int = 3, norm: str = "group"):
        super().__init__()
        self.norm1, self.conv1 = make_norm(norm, cin, groups), Conv(cin, cout, kind, kt)
        self.norm2, self.conv2 = make_norm(norm, cout, groups), Conv(cout, cout, kind, kt)
        self.skip = CausalConv(cin, cout, kt=1, ks=1) if cin != cout else None
        nn.init.zeros_(self.conv2.spatial.conv.weight)  # each block starts as the identity (Fixup-style)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


def check_channel_resize(c: int, cout: int) -> None:
    """A channel shortcut from c to cout channels needs one to divide the other (a clear error
    when a model is built, not at its first forward)."""
    if max(c, cout) % min(c, cout):
        raise ValueError(f"a channel shortcut from {c} to {cout} channels needs one to divide the other "
                         f"(choose base_channels, channel_mult and latent_channels accordingly)")


def channel_resize(x: torch.Tensor, cout: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, cout, H, W) with no parameters: the mean of each group of C/cout
    consecutive channels (DC-AE's channel averaging) or each channel repeated cout/C times (its
    channel duplicating)."""
    B, T, C, H, W = x.shape
    check_channel_resize(C, cout)
    if C > cout:
        return x.reshape(B, T, cout, C // cout, H, W).mean(dim=3)  # (B, T, cout, H, W)
    if cout > C:
        return x.repeat_interleave(cout // C, dim=2)  # (B, T, cout, H, W)
    return x


def space_to_channel(x: torch.Tensor, space: bool, time: bool, first_chunk: bool) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T', C*f, H', W'): 2x2 pixel-unshuffle if `space` (f *= 4) and, if
    `time`, frames paired onto the channel axis (f *= 2), older frame first.

    Time is paired causally, as the strided temporal conv: frame 0 is paired with itself (a copy,
    the conv's replicate padding) and output j >= 1 holds frames 2j-1 and 2j, so 2k+1 frames give
    k+1 and output 0 sees frame 0 only. A continuation chunk (`first_chunk` False, streaming) has
    an even number of frames and is paired as it comes, which is what one pass would do."""
    B = x.shape[0]
    if space:
        x = unbatch_frames(F.pixel_unshuffle(batch_frames(x), 2), B)  # (B, T, 4C, H/2, W/2)
    if time:
        if first_chunk:
            x = torch.cat([x[:, :1], x], dim=1)  # (B, T+1, C, H, W): frame 0 twice
        B, T, C, H, W = x.shape
        if T % 2:
            raise ValueError(f"a temporal shortcut needs 2k+1 frames (first chunk) or an even count (after), got {T}")
        x = x.reshape(B, T // 2, 2 * C, H, W)  # (B, T/2, 2C, H, W): frames (2j-1, 2j) side by side
    return x


def channel_to_space(x: torch.Tensor, space: bool, time: bool, first_chunk: bool) -> torch.Tensor:
    """The inverse rearrangement of `space_to_channel`: (B, T, C, H, W) -> (B, T', C/f, H', W').
    In time each frame unfolds into two and, on the first chunk, the first of the video (frame 0's
    copy) is dropped: k+1 -> 2k+1, as Upsample's depth-to-time."""
    if time:
        B, T, C, H, W = x.shape
        x = x.reshape(B, 2 * T, C // 2, H, W)  # (B, 2T, C/2, H, W)
        if first_chunk:
            x = x[:, 1:]  # (B, 2T-1, C/2, H, W)
    if space:
        B = x.shape[0]
        x = unbatch_frames(F.pixel_shuffle(batch_frames(x), 2), B)  # (B, T, C/4, 2H, 2W)
    return x


class Downsample(nn.Module):
    """If `space`, H, W /2 (3x3 stride-2 conv per frame); if `time`, time 2k+1 -> k+1 (causal conv,
    kt 3, stride 2: output j sees frames 2j-2..2j, so output 0 sees frame 0 only). Channels
    ch -> cout (default ch).

    `shortcut` (DC-AE's residual autoencoding): add space_to_channel(x) averaged down to cout
    channels, a fixed map the convs only have to correct. Output j of the shortcut sees frames
    2j-1..2j, inside what the conv sees, so causality and streaming are unchanged."""

    def __init__(self, ch: int, space: bool, time: bool, cout: int | None = None, shortcut: bool = False):
        super().__init__()
        cout = ch if cout is None else cout
        self.space, self.time, self.cout, self.shortcut = space, time, cout, shortcut
        self.spatial = CausalConv(ch, cout, kt=1, ks=3, ss=2 if space else 1)
        self.temporal = CausalConv(cout, cout, kt=3, ks=1, st=2) if time else None
        if shortcut:  # fail at build time, not at the first forward
            check_channel_resize(ch * (4 if space else 1) * (2 if time else 1), cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut:
            first_chunk = self.temporal is None or not (self.temporal.streaming and self.temporal.cache is not None)
            skip = channel_resize(space_to_channel(x, self.space, self.time, first_chunk), self.cout)
        x = self.spatial(x)  # (B, T, C, H/2, W/2)
        x = self.temporal(x) if self.temporal is not None else x  # (B, T//2 + 1, ...)
        return x + skip if self.shortcut else x


class Upsample(nn.Module):
    """If `space`, H, W x2 (nearest + 3x3 conv); if `time`, time k+1 -> 2k+1: a causal conv makes two
    frames' worth of channels per latent frame (depth-to-time), and the first output frame of the
    video is dropped, so latent 0 gives frame 0 and latent j gives frames 2j-1 and 2j. Channels
    ch -> cout (default ch).

    `shortcut` (DC-AE): add channel_to_space of x with its channels duplicated up to cout x (2x2
    pixels x 2 frames): latent j's shortcut reaches frames 2j-1..2j only, as the conv path."""

    def __init__(self, ch: int, space: bool, time: bool, cout: int | None = None, shortcut: bool = False):
        super().__init__()
        cout = ch if cout is None else cout
        self.space, self.time, self.cout, self.shortcut = space, time, cout, shortcut
        self.temporal = CausalConv(ch, 2 * ch, kt=3, ks=1) if time else None
        if self.temporal is not None:  # start as "repeat the frame twice"
            w = self.temporal.conv.weight
            with torch.no_grad():
                w.zero_()
                w[:ch, 2 * ch:, 0, 0] = torch.eye(ch)
                w[ch:, 2 * ch:, 0, 0] = torch.eye(ch)
                self.temporal.conv.bias.zero_()
        self.spatial = CausalConv(ch, cout, kt=1, ks=3)
        self.first_chunk = True
        self.factor = (4 if space else 1) * (2 if time else 1)  # values of one latent cell per output cell
        if shortcut:
            check_channel_resize(ch, cout * self.factor)

    def stream_on(self) -> None:
        self.first_chunk = True

    def stream_off(self) -> None:
        self.first_chunk = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal is not None:
            drop_first = self.first_chunk or not self.temporal.streaming
            self.first_chunk = False
        if self.shortcut:
            skip = channel_to_space(channel_resize(x, self.cout * self.factor), self.space, self.time,
                                    self.time and drop_first)  # (B, 2T-1, cout, 2H, 2W)
        if self.temporal is not None:
            B, T, C, H, W = x.shape
            x = self.temporal(x).reshape(B, T, 2, C, H, W).reshape(B, 2 * T, C, H, W)  # depth-to-time
            if drop_first:
                x = x[:, 1:]  # (B, 2T-1, C, H, W)
        B, h = x.shape[0], batch_frames(x)
        if self.space:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        x = unbatch_frames(self.spatial.conv(h), B)  # kt=1: no temporal state
        return x + skip if self.shortcut else x
