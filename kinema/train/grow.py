"""Start a deeper DiT from a trained shallower one, computing exactly the same function.

    kinema train dit --config configs/default-deep.toml   # init_from = "runs/default/model", [dit] depth = 8

Block j of the new model (depth D') copies block floor(j * D / D') of the old one (depth D), so
each old block appears D'/D times, in order. The first copy keeps its weights; every further copy
starts as the identity, the adaLN-Zero way: its adaLN projection (shift, scale and the two gates)
and its cross-attention's output projection are zeroed, so it adds nothing until training moves
them, while its attention and MLP weights start from trained ones rather than from noise. All
other tensors (patch embedding, timestep and text embedders, final layer) are copied as they are.
So at step 0 the deeper model's output equals the old model's (tests/test_grow.py), and training
goes on from there with twice the blocks (stacking, as in Gong et al. 2019 "Efficient training of
BERT by progressively stacking"; function-preserving as Net2Net, Chen et al. 2016). A trained text
refiner grows the same way, its repeats' attention and MLP outputs zeroed (REFINER_ZEROED).

Widths, heads and conditioning must match. The autoencoder may change too (latent channels and
patch size, e.g. from the 4x8x8 VAE with a 1x2x2 patch to the 4x32x32 one with 1x1x1): then the
two layers that touch latent values, the patch embedding `x_embed` and the output `final.linear`,
keep the new model's fresh initialisation (the output zero, so the model starts by predicting zero
velocity) and the rest, the trunk that reads text and time and mixes tokens, is carried over.
That is a warm start, not the same function. `trunk_only=True` (the trainer's `init_trunk_only`)
does the same when the latent fields match, so runs on different autoencoders can start from the
same trunk on equal terms (the autoencoder study in docs/autoencoder.md).

A model with the pooled-text path may start one without it (`[dit] pooled_text = false`,
`fold_pooled_text`): the old path's output for an empty caption, pooled_embed(0), a constant, is
added to the timestep embedder's last bias, so the new model computes exactly what the old one
computes when its adaLN is given the empty caption's pooled vector and cross-attention the real
caption. Also a warm start: the old model never saw that pairing.

A smaller patch on the same autoencoder (1x2x2 -> 1x1x1: four times the tokens) is re-patched
instead (`repatch_state_dict`): the new model computes exactly what the old one computes on the
latent upsampled by the patch ratio (each latent cell repeated f times per axis), averaged back
over each f-block. Its patch embedding is the old one summed over the f-blocks of its kernel (a
token sees the old patch filled with its one cell), its output layer the old one averaged over
them. With `rope_scale` divided by the same ratio (position interpolation), a token offset
still spans the pixels it did, so the trunk starts on a scene it knows at twice the token density
(FlexiViT, Beyer et al. 2023, resizes patch embeddings for the same reason). Also a warm start:
the old model never saw such upsampled latents.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..autoencoder.vae import CONFIG_NAME, WEIGHTS_NAME
from ..models.dit import DiT
from ..pipelines.pipeline import dit_folder, load_dit

# Per block: the tensors that make a repeated copy start as the identity (see module docstring).
IDENTITY_ZEROED = ("adaLN.1.weight", "adaLN.1.bias", "cross.proj.weight", "cross.proj.bias")
# Per text-refiner block: its two residual outputs (the block is then the identity).
REFINER_ZEROED = ("proj.weight", "proj.bias", "mlp.2.weight", "mlp.2.bias")
SAME_FIELDS = ("hidden_size", "num_heads", "mlp_ratio", "text_dim", "conditioning", "qk_norm", "rope_theta")
POOLED = "pooled_embed."
# rope_scale may differ too: it moves token positions, not weights.
LATENT_FIELDS = ("in_channels", "patch_size")  # may differ: a new autoencoder (see module docstring)
LATENT_LAYERS = ("x_embed.", "final.linear.")  # the layers that touch latent values


def grow_state_dict(src: dict[str, torch.Tensor], src_depth: int, dst_depth: int, stack: str = "blocks",
                    zeroed: tuple[str, ...] = IDENTITY_ZEROED) -> dict[str, torch.Tensor]:
    """A depth-`dst_depth` DiT state dict that computes what the depth-`src_depth` one does: the
    blocks of `stack` ("blocks", or "text_refiner" with REFINER_ZEROED) repeated in order, each
    repeat the identity by its `zeroed` tensors."""
    if dst_depth < src_depth:
        raise ValueError(f"can only grow: the new depth {dst_depth} is below the old {src_depth}")
    out = {k: v.clone() for k, v in src.items() if not k.startswith(f"{stack}.")}
    previous = None
    for j in range(dst_depth):
        i = j * src_depth // dst_depth
        prefix, repeat = f"{stack}.{i}.", i == previous
        for key, value in src.items():
            if key.startswith(prefix):
                name = key[len(prefix):]
                out[f"{stack}.{j}.{name}"] = torch.zeros_like(value) if repeat and name in zeroed else value.clone()
        previous = i
    return out


def patch_ratio(old: tuple[int, int, int], new: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """Per axis, how many new patches make one old one; None unless `new` divides `old` (and differs)."""
    if tuple(old) == tuple(new) or any(o % n for o, n in zip(old, new)):
        return None
    return tuple(o // n for o, n in zip(old, new))


def repatch_state_dict(src: dict[str, torch.Tensor], old_patch: tuple[int, int, int],
                       new_patch: tuple[int, int, int], channels: int) -> dict[str, torch.Tensor]:
    """A DiT state dict for patch `new_patch` that computes, on a latent z, what the `old_patch` one
    computes on z upsampled by the patch ratio, averaged back (module docstring). Rows and columns
    of the latent layers run over (pt, ph, pw, C), patchify's order."""
    (ft, fh, fw), (pt, ph, pw) = patch_ratio(old_patch, new_patch), new_patch
    out = dict(src)
    w = src["x_embed.weight"]  # (D, old pt*ph*pw*C); old index along an axis = new index * f + sub-index
    w = w.reshape(-1, pt, ft, ph, fh, pw, fw, channels).sum(dim=(2, 4, 6))  # (D, pt, ph, pw, C)
    out["x_embed.weight"] = w.reshape(w.shape[0], -1)
    for key in ("final.linear.weight", "final.linear.bias"):
        v = src[key]  # (old P, D) or (old P,)
        v = v.reshape(pt, ft, ph, fh, pw, fw, channels, *v.shape[1:]).mean(dim=(1, 3, 5))
        out[key] = v.reshape(pt * ph * pw * channels, *v.shape[4:])
    return out


def fold_pooled_text(src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without the pooled-text path whose c = t_embed(t) equals the old model's c for
    an empty caption, t_embed(t) + pooled_embed(0) (module docstring)."""
    b0, w2, b2 = src[POOLED + "0.bias"], src[POOLED + "2.weight"], src[POOLED + "2.bias"]
    null = w2 @ torch.nn.functional.silu(b0) + b2  # (D,) pooled_embed of the empty caption's zero vector
    out = {k: v for k, v in src.items() if not k.startswith(POOLED)}
    out["t_embed.mlp.2.bias"] = src["t_embed.mlp.2.bias"] + null
    return out


def init_from_model(model: DiT, folder: str | Path, trunk_only: bool = False) -> tuple[int, list[str]]:
    """Load a trained model folder's DiT (`folder`/dit or `folder` itself: config.json +
    model.safetensors) into `model`, growing its depth if `model` is deeper, folding away the
    pooled-text path if `model` has none, re-patching its latent
    layers if `model`'s patch divides the old one on the same latent channels, and keeping `model`'s
    own latent layers if the latent channels or patch differ otherwise (or `trunk_only`). Returns the old
    depth and the latent fields that changed, each saying what its layers got ("in_channels: 16 -> 128
    (fresh)", "patch_size: (1, 2, 2) -> (1, 1, 1) (re-patched)", ...; empty when none changed)."""
    dit_dir = dit_folder(folder)
    if not (dit_dir / CONFIG_NAME).is_file() or not (dit_dir / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"init_from: '{folder}' has no DiT (expected dit/{CONFIG_NAME} and "
                                f"dit/{WEIGHTS_NAME}, as `kinema export` writes)")
    trained = load_dit(dit_dir)
    old, new = trained.cfg, model.cfg
    differ = [f"{f}: {getattr(old, f)} vs {getattr(new, f)}" for f in SAME_FIELDS if getattr(old, f) != getattr(new, f)]
    if differ:
        raise ValueError(f"init_from '{folder}': only depth, text_refiner_depth, pooled_text, in_channels and patch_size may "
                         "differ from the "
                         "new model; also differs: "
                         + "; ".join(differ))
    if new.conditioning != "cross" and new.depth != old.depth:
        raise ValueError("growing depth is supported for conditioning = 'cross' only (a joint model's last "
                         "block has no text stream, so it cannot be repeated as the identity)")
    if old.text_refiner_depth > new.text_refiner_depth:
        raise ValueError(f"init_from '{folder}': text_refiner_depth {old.text_refiner_depth} -> "
                         f"{new.text_refiner_depth}; a refiner can be added, kept or grown, not cut")
    if old.pooled_text != new.pooled_text and not old.pooled_text:
        raise ValueError(f"init_from '{folder}': it has no pooled-text path and the new model has one; "
                         "the path can be dropped from a trained model (pooled_text = false), not added")
    state = grow_state_dict(trained.state_dict(), old.depth, new.depth)
    if old.text_refiner_depth:  # grown like the trunk: each refiner block repeated, repeats the identity
        state = grow_state_dict(state, old.text_refiner_depth, new.text_refiner_depth, "text_refiner", REFINER_ZEROED)
    if old.pooled_text and not new.pooled_text:
        state = fold_pooled_text(state)
    state.update({k: v for k, v in model.state_dict().items() if k.startswith("text_refiner.") and k not in state})
    new_latents = [f"{f}: {getattr(old, f)} -> {getattr(new, f)}" for f in LATENT_FIELDS if getattr(old, f) != getattr(new, f)]
    if not trunk_only and old.in_channels == new.in_channels and patch_ratio(old.patch_size, new.patch_size):
        state = repatch_state_dict(state, old.patch_size, new.patch_size, old.in_channels)
        new_latents = [f + " (re-patched)" for f in new_latents]
    elif new_latents or trunk_only:  # a new autoencoder (or asked): keep this model's fresh latent layers
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(LATENT_LAYERS)})
        new_latents = [f + " (fresh)" for f in new_latents]
    model.load_state_dict(state, strict=True)
    return old.depth, new_latents
