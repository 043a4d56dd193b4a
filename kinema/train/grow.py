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
BERT by progressively stacking"; function-preserving as Net2Net, Chen et al. 2016).

Widths, heads, patch size and conditioning must match; only depth may grow.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..autoencoder.vae import CONFIG_NAME, WEIGHTS_NAME
from ..models.dit import DiT
from ..pipelines.pipeline import load_dit

# Per block: the tensors that make a repeated copy start as the identity (see module docstring).
IDENTITY_ZEROED = ("adaLN.1.weight", "adaLN.1.bias", "cross.proj.weight", "cross.proj.bias")
SAME_FIELDS = ("in_channels", "patch_size", "hidden_size", "num_heads", "mlp_ratio", "text_dim",
               "conditioning", "qk_norm", "rope_theta")


def grow_state_dict(src: dict[str, torch.Tensor], src_depth: int, dst_depth: int) -> dict[str, torch.Tensor]:
    """A depth-`dst_depth` DiT state dict that computes what the depth-`src_depth` one does."""
    if dst_depth < src_depth:
        raise ValueError(f"can only grow: the new depth {dst_depth} is below the old {src_depth}")
    out = {k: v.clone() for k, v in src.items() if not k.startswith("blocks.")}
    previous = None
    for j in range(dst_depth):
        i = j * src_depth // dst_depth
        prefix, repeat = f"blocks.{i}.", i == previous
        for key, value in src.items():
            if key.startswith(prefix):
                name = key[len(prefix):]
                out[f"blocks.{j}.{name}"] = torch.zeros_like(value) if repeat and name in IDENTITY_ZEROED else value.clone()
        previous = i
    return out


def init_from_model(model: DiT, folder: str | Path) -> int:
    """Load a trained model folder's DiT (`folder`/dit or `folder` itself: config.json +
    model.safetensors) into `model`, growing its depth if `model` is deeper. Returns the old depth."""
    folder = Path(folder)
    dit_dir = folder / "dit" if (folder / "dit").is_dir() else folder
    if not (dit_dir / CONFIG_NAME).is_file() or not (dit_dir / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"init_from: '{folder}' has no DiT (expected dit/{CONFIG_NAME} and "
                                f"dit/{WEIGHTS_NAME}, as `kinema export` writes)")
    trained = load_dit(dit_dir)
    old, new = trained.cfg, model.cfg
    differ = [f"{f}: {getattr(old, f)} vs {getattr(new, f)}" for f in SAME_FIELDS if getattr(old, f) != getattr(new, f)]
    if differ:
        raise ValueError(f"init_from '{folder}': only depth may differ from the new model; also differs: "
                         + "; ".join(differ))
    if new.conditioning != "cross" and new.depth != old.depth:
        raise ValueError("growing depth is supported for conditioning = 'cross' only (a joint model's last "
                         "block has no text stream, so it cannot be repeated as the identity)")
    state = grow_state_dict(trained.state_dict(), old.depth, new.depth)
    model.load_state_dict(state, strict=True)
    return old.depth
