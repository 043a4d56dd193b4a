"""kinema.models: the DiT's shapes, init, 3D RoPE, text masking, presets, FLOPs, and that it learns."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from kinema import flow
from kinema.config import ConfigError
from kinema.models import PRESETS, DiT, DiTConfig, dit_config, forward_flops
from kinema.models.dit import patchify, unpatchify
from kinema.models.rope import apply_rope, grid_positions, rope_angles, rope_cos_sin, rope_split

MODES = ["cross", "joint"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models are all overhead: on a shared 2-core box two threads fight each other (~10x
    # slower than one). Restored afterwards so other test files keep their setting.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(conditioning="cross", **kw) -> DiTConfig:
    base = dict(in_channels=4, patch_size=(1, 2, 2), hidden_size=64, depth=2, num_heads=2, text_dim=24,
                conditioning=conditioning)
    return DiTConfig(**{**base, **kw})


def perturbed(cfg: DiTConfig, seed: int = 0) -> DiT:
    """A model with every weight moved off its (partly zero) init, so every path is live."""
    torch.manual_seed(seed)
    model = DiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def inputs(cfg: DiTConfig, B=2, thw=(3, 4, 6), L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg.in_channels, *thw, generator=g)
    t = torch.rand(B, generator=g)
    text = torch.randn(B, L, cfg.text_dim, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, L - 2:] = False  # sample 0 has a shorter caption
    return x, t, text, mask


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("thw,patch", [((1, 4, 4), (1, 2, 2)), ((3, 4, 8), (1, 2, 2)), ((5, 6, 2), (1, 2, 2)),
                                       ((4, 8, 4), (2, 2, 2)), ((2, 3, 5), (1, 1, 1))])
def test_output_shape_equals_input(mode, thw, patch):
    cfg = tiny(mode, patch_size=patch)
    x, t, text, mask = inputs(cfg, thw=thw)
    out = perturbed(cfg)(x, t, text, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("mode", MODES)
def test_zero_init_output_is_exactly_zero(mode):
    cfg = tiny(mode)
    x, t, text, mask = inputs(cfg)
    out = DiT(cfg)(x, t, text, mask)
    assert torch.equal(out, torch.zeros_like(x))


def test_patchify_roundtrip_and_token_order_matches_rope_grid():
    x = torch.randn(2, 3, 4, 6, 8)
    for patch in [(1, 2, 2), (2, 3, 4), (1, 1, 1)]:
        tokens = patchify(x, patch)
        grid = tuple(s // p for s, p in zip(x.shape[2:], patch))
        assert tokens.shape == (2, grid[0] * grid[1] * grid[2], 3 * patch[0] * patch[1] * patch[2])
        assert torch.equal(unpatchify(tokens, grid, patch, 3), x)
    # token n of patchify sits at grid_positions[n]: write each cell's coordinates into its channels
    T, H, W = 3, 4, 5
    coords = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij"))
    tokens = patchify(coords[None].float(), (1, 1, 1))[0]  # (T*H*W, 3)
    assert torch.equal(tokens.long(), grid_positions((T, H, W)))


@pytest.mark.parametrize("head_dim", [8, 32, 48, 64, 72, 96, 128])
def test_rope_split_even_parts(head_dim):
    parts = rope_split(head_dim)
    assert sum(parts) == head_dim and all(p > 0 and p % 2 == 0 for p in parts)
    assert parts[1] == parts[2]  # rows and columns alike, so a transposed video is treated alike


def test_rope_split_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even head_dim"):
        rope_split(30 + 1)


def test_rope_score_depends_only_on_offset():
    torch.manual_seed(0)
    head_dim = 48
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(p, p2):
        pos = torch.tensor([p, p2], dtype=torch.float32)  # (2, 3)
        a = rope_angles(pos, head_dim)
        qr = apply_rope(q[None], a.cos()[:1], a.sin()[:1])[0]
        kr = apply_rope(k[None], a.cos()[1:], a.sin()[1:])[0]
        return (qr * kr).sum()

    p, p2 = (2.0, 3.0, 1.0), (5.0, 0.0, 7.0)
    for d in [(1, 0, 0), (0, 4, 0), (0, 0, -3), (7, 11, 13)]:
        moved = score(tuple(a + b for a, b in zip(p, d)), tuple(a + b for a, b in zip(p2, d)))
        assert torch.allclose(score(p, p2), moved, atol=1e-4)
    # ... and does depend on the offset, along each axis
    for d in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]:
        assert not torch.allclose(score(p, p2), score(p, tuple(a + b for a, b in zip(p2, d))), atol=1e-3)
    # rotation keeps norms, and position 0 is the identity (what text tokens get)
    cos, sin = rope_cos_sin((2, 3, 4), head_dim)
    x = torch.randn(1, 2, 24, head_dim)
    assert torch.allclose(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(apply_rope(x[:, :, :1], cos[:1], sin[:1]), x[:, :, :1])


def test_rope_is_the_written_out_rotation_of_each_channel_pair():
    torch.manual_seed(0)
    cos, sin = rope_cos_sin((2, 3, 4), 16)  # 2 x (24, 8)
    x = torch.randn(2, 24, 3, 16).transpose(1, 2)  # (B, h, N, d), not contiguous: as a split qkv gives it
    x1, x2 = x[..., 0::2], x[..., 1::2]
    written = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    assert torch.equal(apply_rope(x, cos, sin), written)
    xb = x.bfloat16()  # rotated in fp32, returned in the input's dtype
    assert apply_rope(xb, cos, sin).dtype == torch.bfloat16
    assert torch.equal(apply_rope(xb, cos, sin), apply_rope(xb.float(), cos, sin).bfloat16())
    xg = x.clone().requires_grad_(True)
    apply_rope(xg, cos, sin).pow(2).sum().backward()  # a rotation keeps norms: d|Rx|^2/dx = 2x
    assert torch.allclose(xg.grad, 2 * x, atol=1e-5)


def test_the_sampling_gelu_is_the_tanh_gelu():
    from kinema.models.dit import TanhGELU
    x = torch.linspace(-8, 8, 4001).reshape(1, -1)
    ref = torch.nn.functional.gelu(x, approximate="tanh")
    with torch.no_grad():
        fast = TanhGELU()(x)  # the in-place sigmoid form
    assert torch.allclose(fast, ref, atol=1e-6, rtol=0) and torch.equal(x, torch.linspace(-8, 8, 4001).reshape(1, -1))
    xg = x.clone().requires_grad_(True)
    TanhGELU()(xg).sum().backward()  # with autograd: F.gelu itself
    assert torch.equal(TanhGELU()(xg), ref) and xg.grad is not None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("refiner", [0, 1])
def test_a_text_context_made_once_gives_the_same_velocity(mode, refiner):
    cfg = tiny(mode, text_refiner_depth=refiner)
    model = perturbed(cfg)
    x, t, text, mask = inputs(cfg)
    mask[1] = False  # an empty caption too
    with torch.no_grad():
        ref = model(x, t, text, mask)
        ctx = model.encode_text(text, mask, keys_values=True)
        assert (ctx.kv is not None) == (mode == "cross")  # joint blocks modulate the text by t: nothing to keep
        assert torch.allclose(model(x, t, context=ctx), ref, atol=1e-6)
        for t2 in (torch.zeros(2), torch.ones(2)):  # one context, any noise level
            assert torch.allclose(model(x, t2, context=ctx), model(x, t2, text, mask), atol=1e-6)
        rows = torch.tensor([1, 0, 0])  # a context made once per caption, read by several samples
        x3 = torch.cat([x, x[:1]])
        assert torch.allclose(model(x3, t[rows], context=ctx.select(rows)), model(x3, t[rows], text[rows], mask[rows]),
                              atol=1e-6)
    with pytest.raises(ValueError, match="exactly once"):
        model(x, t, text, mask, context=ctx)
    with pytest.raises(ValueError, match="exactly once"):
        model(x, t)
    with pytest.raises(ValueError, match="context states"):
        model(x[:1], t[:1], context=ctx)


def test_a_loaded_dit_is_built_unfilled_and_holds_exactly_the_files_weights(tmp_path):
    from kinema.models.loading import skip_init
    from kinema.pipelines.pipeline import load_dit, save_dit
    ones = torch.ones(3)
    with skip_init():
        assert torch.nn.init.zeros_(ones) is ones and torch.equal(ones, torch.ones(3))  # fills do nothing inside
    with pytest.raises(RuntimeError), skip_init():
        raise RuntimeError  # and are given back however the block ends
    assert torch.equal(torch.nn.init.zeros_(ones), torch.zeros(3))
    model = perturbed(tiny())
    save_dit(model, model.cfg, tmp_path)
    loaded = load_dit(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert torch.equal(torch.nn.init.zeros_(torch.ones(2)), torch.zeros(2))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("refiner", [0, 1])
def test_padding_text_tokens_do_not_change_the_output(mode, refiner):
    cfg = tiny(mode, text_refiner_depth=refiner)
    model = perturbed(cfg)
    x, t, text, mask = inputs(cfg)
    with torch.no_grad():
        ref = model(x, t, text, mask)
        extra = 4
        text_pad = torch.cat([text, 100 * torch.randn(2, extra, cfg.text_dim)], dim=1)  # garbage in the padding
        mask_pad = torch.cat([mask, torch.zeros(2, extra, dtype=torch.bool)], dim=1)
        assert torch.allclose(model(x, t, text_pad, mask_pad), ref, atol=1e-5)
        # an all-True mask is the same as no mask
        full = torch.ones_like(mask)
        assert torch.allclose(model(x, t, text, full), model(x, t, text, None), atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_the_text_changes_the_output(mode):
    cfg = tiny(mode)
    model = perturbed(cfg)
    x, t, text, mask = inputs(cfg)
    with torch.no_grad():
        a = model(x, t, text, mask)
        b = model(x, t, text.roll(1, dims=1), mask)  # same words, other order
        c = model(x, t, torch.randn_like(text), mask)
    assert (a - b).abs().max() > 1e-3 and (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("refiner", [0, 1])
def test_empty_caption_is_finite(mode, refiner):
    cfg = tiny(mode, text_refiner_depth=refiner)
    x, t, text, mask = inputs(cfg)
    mask[1] = False  # sample 1: no real text tokens at all
    out = perturbed(cfg)(x, t, text, mask)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("mode", MODES)
def test_bf16_autocast_runs(mode):
    cfg = tiny(mode)
    x, t, text, mask = inputs(cfg)
    model = perturbed(cfg)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, text, mask)
    ref = model(x, t, text, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean()


def test_bad_shapes_are_clear_errors():
    cfg = tiny()
    model = DiT(cfg)
    x, t, text, mask = inputs(cfg, thw=(3, 5, 6))
    with pytest.raises(ValueError, match=r"\(3, 5, 6\).*\(1, 2, 2\)"):
        model(x, t, text, mask)
    x, t, text, mask = inputs(cfg)
    with pytest.raises(ValueError, match="text_dim=24"):
        model(x, t, text[..., :10], mask)
    with pytest.raises(ValueError, match="bool"):
        model(x, t, text, mask.float())
    with pytest.raises(ValueError, match="latents"):
        model(x[:, :3], t, text, mask)


def test_config_validation_and_presets():
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        DiTConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ConfigError, match="even and >= 8"):
        DiTConfig(hidden_size=45, num_heads=3)  # head_dim 15
    with pytest.raises(ConfigError, match="unknown DiT preset 'dit-xxl'.*dit-t"):
        dit_config("dit-xxl")
    with pytest.raises(ConfigError, match="unknown config key"):
        dit_config("dit-t", hiden_size=128)
    assert dit_config("dit-t", depth=2, patch_size=[1, 2, 2]).patch_size == (1, 2, 2)

    counts = {}
    for name in PRESETS:
        with torch.device("meta"):
            counts[name] = DiT(dit_config(name)).num_params()
    assert 2e6 <= counts["dit-t"] <= 5e6
    order = ["dit-t", "dit-s", "dit-b", "dit-l", "dit-xl", "dit-os2"]
    assert [counts[n] for n in order] == sorted(counts.values())
    assert 10e9 <= counts["dit-os2"] <= 12e9


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("refiner", [0, 2])
def test_forward_flops_matches_the_flop_counter(mode, refiner):
    cfg = tiny(mode, depth=3, text_refiner_depth=refiner)
    x, t, text, mask = inputs(cfg, thw=(2, 4, 6), L=7)
    model = DiT(cfg)
    # the math backend runs attention as bmm, which the counter sees (the fused CPU kernel it does not)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x[:1], t[:1], text[:1], mask[:1])
    assert forward_flops(cfg, (2, 4, 6), 7) == counter.get_total_flops()


def test_unknown_conditioning_is_a_config_value_error():
    with pytest.raises(ValueError):
        DiTConfig(conditioning="film")


@pytest.mark.parametrize("mode", MODES)
def test_tiny_dit_overfits_one_batch(mode):
    torch.manual_seed(0)
    cfg = tiny(mode)
    model = DiT(cfg)
    x0, _, text, mask = inputs(cfg, thw=(2, 4, 4))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x0.shape, generator=g)
    t = flow.sample_timesteps(x0.shape[0], g)
    xt = flow.interpolate(x0, noise, t)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for step in range(100):
        loss = flow.flow_loss(model(xt, t, text, mask), x0, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:  # every parameter is on the graph (DDP without find_unused_parameters)
            assert [n for n, p in model.named_parameters() if p.grad is None] == []
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_only_the_text_refiner_reads_the_order_of_the_caption_states():
    """Cross-attention reads the caption's states as a set: permuting them changes nothing. The
    text refiner's self-attention with 1D RoPE reads their order, so with it the output changes."""
    perm = torch.tensor([3, 0, 4, 1, 2])
    for refiner, changes in ((0, False), (1, True)):
        cfg = tiny("cross", text_refiner_depth=refiner)
        model = perturbed(cfg)
        x, t, text, _ = inputs(cfg)
        with torch.no_grad():
            diff = (model(x, t, text) - model(x, t, text[:, perm])).abs().max()
        assert (diff > 1e-3) if changes else (diff < 1e-5), (refiner, float(diff))


def test_a_new_text_refiner_is_the_identity():
    from kinema.models.dit import text_rope

    cfg = tiny("cross", text_refiner_depth=2)
    model = DiT(cfg)
    y = torch.randn(2, 5, cfg.hidden_size)
    rope = text_rope(5, cfg.head_dim, cfg.rope_theta, None)
    for block in model.text_refiner:
        assert torch.equal(block(y, rope, None), y)
    with pytest.raises(ConfigError):
        tiny(text_refiner_depth=-1)
