"""Growing a trained DiT deeper (kinema/train/grow.py): step 0 computes what the old model did."""
import json

import pytest
import torch
from test_dit import inputs, one_thread, perturbed, tiny  # noqa: F401  (one_thread: autouse fixture)
from test_train_dit import vae_dir, write_config  # noqa: F401  (vae_dir: fixture)

from kinema.models import DiT
from kinema.pipelines import KinemaPipeline
from kinema.pipelines.pipeline import save_dit
from kinema.train.config import load_dit_train_config
from kinema.train.dit import train_dit
from kinema.models.dit import DiTConfig
from kinema.models.rope import rope_cos_sin
from kinema.train.grow import grow_state_dict, init_from_model, patch_ratio, repatch_state_dict


def saved(model: DiT, folder):
    save_dit(model, model.cfg, folder / "dit")
    return folder


@pytest.mark.parametrize("old_depth,new_depth", [(2, 2), (2, 4), (2, 5), (3, 8)])
def test_grown_model_computes_the_same_function(old_depth, new_depth):
    cfg = tiny(depth=old_depth)
    old = perturbed(cfg)  # every adaLN and gate non-zero: the old blocks really act
    new = DiT(tiny(depth=new_depth)).eval()
    new.load_state_dict(grow_state_dict(old.state_dict(), old_depth, new_depth), strict=True)
    x, t, y, mask = inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(new(x, t, y, mask), old(x, t, y, mask), atol=1e-5, rtol=1e-5)


def test_repeated_blocks_start_as_identity_but_keep_trained_attention():
    old = perturbed(tiny(depth=2))
    state = grow_state_dict(old.state_dict(), 2, 4)  # new blocks 0,1 <- old 0; 2,3 <- old 1
    for j, i in [(0, 0), (2, 1)]:  # first copies: everything as trained
        torch.testing.assert_close(state[f"blocks.{j}.adaLN.1.weight"], old.state_dict()[f"blocks.{i}.adaLN.1.weight"])
    for j, i in [(1, 0), (3, 1)]:  # repeats: identity, yet attention weights trained
        assert not state[f"blocks.{j}.adaLN.1.weight"].any() and not state[f"blocks.{j}.cross.proj.bias"].any()
        torch.testing.assert_close(state[f"blocks.{j}.attn.qkv.qkv.weight"], old.state_dict()[f"blocks.{i}.attn.qkv.qkv.weight"])


def test_init_from_errors(tmp_path):
    folder = saved(perturbed(tiny(depth=2)), tmp_path / "m")
    with pytest.raises(ValueError, match="can only grow"):
        init_from_model(DiT(tiny(depth=1)), folder)
    with pytest.raises(ValueError, match="hidden_size: 64 vs 32"):
        init_from_model(DiT(tiny(depth=2, hidden_size=32)), folder)
    with pytest.raises(FileNotFoundError, match="has no DiT"):
        init_from_model(DiT(tiny()), tmp_path / "nothing")
    joint = saved(perturbed(tiny("joint", depth=2)), tmp_path / "j")
    with pytest.raises(ValueError, match="cross' only"):
        init_from_model(DiT(tiny("joint", depth=4)), joint)
    assert init_from_model(DiT(tiny(depth=3)), folder) == (2, [])


def test_init_from_adds_a_text_refiner_as_the_identity(tmp_path):
    old = perturbed(tiny(depth=2))
    folder = saved(old, tmp_path / "m")
    new = DiT(tiny(depth=4, text_refiner_depth=2)).eval()
    assert init_from_model(new, folder) == (2, [])
    x, t, y, mask = inputs(tiny())
    with torch.no_grad():
        torch.testing.assert_close(new(x, t, y, mask), old(x, t, y, mask), atol=1e-5, rtol=1e-5)
    trained = perturbed(tiny(depth=2, text_refiner_depth=2)).eval()
    with_refiner = saved(trained, tmp_path / "r")
    with pytest.raises(ValueError, match="text_refiner_depth 2 -> 1"):
        init_from_model(DiT(tiny(depth=2, text_refiner_depth=1)), with_refiner)
    kept = DiT(tiny(depth=2, text_refiner_depth=2))
    init_from_model(kept, with_refiner)  # the same refiner depth: copied as trained
    assert kept.text_refiner[0].proj.weight.abs().sum() > 0
    grown = DiT(tiny(depth=2, text_refiner_depth=4)).eval()  # each block twice, the repeats the identity
    init_from_model(grown, with_refiner)
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t, y, mask), trained(x, t, y, mask), atol=1e-5, rtol=1e-5)
    for j, i in [(1, 0), (3, 1)]:
        assert not grown.text_refiner[j].proj.weight.any() and not grown.text_refiner[j].mlp[2].bias.any()
        torch.testing.assert_close(grown.text_refiner[j].qkv.qkv.weight, trained.text_refiner[i].qkv.qkv.weight)


def test_dropping_the_pooled_text_path_folds_the_empty_captions_vector_into_time(tmp_path, monkeypatch):
    old = perturbed(tiny(depth=2))
    folder = saved(old, tmp_path / "m")
    new = DiT(tiny(depth=2, pooled_text=False)).eval()
    assert new.pooled_embed is None and not any(k.startswith("pooled_embed.") for k in new.state_dict())
    init_from_model(new, folder)
    x, t, y, mask = inputs(tiny())
    with torch.no_grad():
        differs = new(x, t, y, mask)
        assert not torch.allclose(differs, old(x, t, y, mask), atol=1e-3)  # the old model reads the pooled caption
        # ... and gives exactly the new output when its adaLN gets the empty caption's (zero) pooled vector
        monkeypatch.setattr("kinema.models.dit.masked_mean", lambda text, mask=None: torch.zeros(text.shape[0], text.shape[2]))
        torch.testing.assert_close(differs, old(x, t, y, mask), atol=1e-5, rtol=1e-5)
    without = saved(perturbed(tiny(depth=2, pooled_text=False)), tmp_path / "p")
    with pytest.raises(ValueError, match="can be dropped from a trained model"):
        init_from_model(DiT(tiny(depth=2)), without)


def test_without_pooled_text_the_caption_reaches_tokens_only_through_cross_attention():
    model = perturbed(tiny(depth=2, pooled_text=False))
    for block in model.blocks:  # cut cross-attention: the caption must then change nothing
        block.cross.proj.weight.data.zero_()
        block.cross.proj.bias.data.zero_()
    x, t, y, mask = inputs(tiny())
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y, mask), model(x, t, torch.randn_like(y), mask))
    with_pool = perturbed(tiny(depth=2))
    for block in with_pool.blocks:
        block.cross.proj.weight.data.zero_()
        block.cross.proj.bias.data.zero_()
    with torch.no_grad():  # with the pooled path it still does, through every block's adaLN
        assert not torch.allclose(with_pool(x, t, y, mask), with_pool(x, t, torch.randn_like(y), mask), atol=1e-3)


def test_a_new_autoencoder_keeps_the_trunk_and_reinitialises_the_latent_layers(tmp_path):
    old = perturbed(tiny(depth=2))
    folder = saved(old, tmp_path / "m")
    torch.manual_seed(7)
    new = DiT(tiny(depth=3, in_channels=8, patch_size=(1, 1, 1)))
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    depth, changed = init_from_model(new, folder)
    assert depth == 2 and changed == [f"in_channels: {old.cfg.in_channels} -> 8 (fresh)",
                                      f"patch_size: {old.cfg.patch_size} -> (1, 1, 1) (fresh)"]
    got, trained = new.state_dict(), old.state_dict()
    for key in ("x_embed.weight", "x_embed.bias", "final.linear.weight", "final.linear.bias"):
        torch.testing.assert_close(got[key], fresh[key])  # the new model's own init
    assert not got["final.linear.weight"].any()  # so it starts at zero velocity
    for key in ("t_embed.mlp.0.weight", "text_embed.2.weight", "blocks.0.attn.qkv.qkv.weight",
                "blocks.2.mlp.0.weight", "final.adaLN.1.weight"):  # trunk: trained (block 2 <- old block 1)
        torch.testing.assert_close(got[key], trained[key.replace("blocks.2.", "blocks.1.")])
    assert not got["blocks.1.adaLN.1.weight"].any()  # a repeat starts as the identity, as before


def test_trunk_only_reinitialises_the_latent_layers_of_the_same_autoencoder(tmp_path):
    old = perturbed(tiny(depth=2))
    folder = saved(old, tmp_path / "m")
    torch.manual_seed(7)
    new = DiT(tiny(depth=2))
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    assert init_from_model(new, folder, trunk_only=True) == (2, [])  # nothing changed, yet:
    got, trained = new.state_dict(), old.state_dict()
    for key in ("x_embed.weight", "final.linear.weight", "final.linear.bias"):
        torch.testing.assert_close(got[key], fresh[key])
        assert not torch.equal(got[key], trained[key])
    torch.testing.assert_close(got["blocks.1.mlp.0.weight"], trained["blocks.1.mlp.0.weight"])
    init_from_model(new, folder)  # the default carries them
    torch.testing.assert_close(new.state_dict()["x_embed.weight"], trained["x_embed.weight"])


@pytest.mark.parametrize("old_patch,new_patch,scale", [((1, 2, 2), (1, 1, 1), (1.0, 0.5, 0.5)),
                                                       ((1, 2, 2), (1, 1, 1), (1.0, 1.0, 1.0)),
                                                       ((2, 2, 2), (1, 2, 1), (0.5, 1.0, 0.5))])
def test_a_repatched_model_is_the_old_one_on_the_upsampled_latent(old_patch, new_patch, scale):
    """new(z) == avgpool_f(old(upsample_f(z))), f the patch ratio, both at the same rope_scale."""
    old = perturbed(tiny(depth=2, patch_size=old_patch, rope_scale=scale))
    new = DiT(tiny(depth=2, patch_size=new_patch, rope_scale=scale)).eval()
    new.load_state_dict(repatch_state_dict(old.state_dict(), old_patch, new_patch, 4), strict=True)
    f = patch_ratio(old_patch, new_patch)
    x, t, y, mask = inputs(old.cfg, thw=(2, 4, 6))  # divisible by the new patch, the old one after upsampling
    up = x.repeat_interleave(f[0], 2).repeat_interleave(f[1], 3).repeat_interleave(f[2], 4)
    with torch.no_grad():
        want = torch.nn.functional.avg_pool3d(old(up, t, y, mask), kernel_size=f)
        torch.testing.assert_close(new(x, t, y, mask), want, atol=1e-5, rtol=1e-5)
    assert patch_ratio((1, 2, 2), (1, 2, 2)) is None and patch_ratio((1, 2, 2), (1, 3, 1)) is None


def test_init_from_repatches_a_smaller_patch_on_the_same_autoencoder(tmp_path):
    old = perturbed(tiny(depth=2))
    folder = saved(old, tmp_path / "m")
    new = DiT(tiny(depth=2, patch_size=(1, 1, 1), rope_scale=(1, 0.5, 0.5)))
    assert init_from_model(new, folder) == (2, ["patch_size: (1, 2, 2) -> (1, 1, 1) (re-patched)"])
    want = repatch_state_dict(old.state_dict(), (1, 2, 2), (1, 1, 1), 4)
    for key in ("x_embed.weight", "final.linear.weight", "final.linear.bias", "blocks.1.mlp.0.weight"):
        torch.testing.assert_close(new.state_dict()[key], want[key])
    fresh = DiT(tiny(depth=2, patch_size=(1, 1, 1)))
    init_from_model(fresh, folder, trunk_only=True)  # asked for fresh latent layers: no re-patching
    assert not fresh.state_dict()["final.linear.weight"].any()


def test_rope_scale_multiplies_positions():
    cos, sin = rope_cos_sin((2, 4, 4), 16, scale=(1.0, 0.5, 0.5))
    cos2, sin2 = rope_cos_sin((2, 2, 2), 16)  # the even rows and columns sit at the coarse grid's positions
    even = torch.arange(32).reshape(2, 4, 4)[:, ::2, ::2].reshape(-1)
    torch.testing.assert_close(cos[even], cos2)
    torch.testing.assert_close(sin[even], sin2)
    with pytest.raises(Exception, match="rope_scale"):
        DiTConfig(rope_scale=(1, 0, 1))
    assert DiTConfig().rope_scale == (1.0, 1.0, 1.0)  # configs written before the field load as before


def test_training_starts_from_the_grown_model_and_resume_ignores_it(tmp_path, vae_dir):  # noqa: F811
    cfg = load_dit_train_config(write_config(tmp_path, vae_dir, "small", steps=2), ["ema_decay=0"])
    train_dit(cfg, progress=False)
    grown_cfg = load_dit_train_config(write_config(tmp_path, vae_dir, "grown", steps=1),
                                      [f"init_from={json.dumps(str(tmp_path / 'small' / 'model'))}", "dit.depth=4",
                                       "optim.lr=1e-12", "ema_decay=0"])
    train_dit(grown_cfg, progress=False)
    a = KinemaPipeline.from_pretrained(tmp_path / "small" / "model").dit
    b = KinemaPipeline.from_pretrained(tmp_path / "grown" / "model").dit
    assert (a.cfg.depth, b.cfg.depth) == (2, 4)
    x, t, y, mask = inputs(a.cfg, thw=(2, 4, 4), L=6)
    with torch.no_grad():
        torch.testing.assert_close(b(x, t, y, mask), a(x, t, y, mask), atol=1e-5, rtol=1e-5)
    # A rerun with a checkpoint resumes from it; init_from only starts fresh runs.
    resumed = train_dit(load_dit_train_config(write_config(tmp_path, vae_dir, "grown", steps=2),
                                              [f"init_from={json.dumps(str(tmp_path / 'nowhere'))}", "dit.depth=4"]),
                        progress=False)
    assert resumed["resumed_from"] == 1
