"""The video autoencoder: a causal 3D-conv VAE, 4x8x8 compression (4x16x16 and 4x32x32 with DC-AE
shortcuts); docs/autoencoder.md.

    from kinema.autoencoder import CausalVideoVAE
    vae = CausalVideoVAE.from_pretrained("runs/vae-f8t4")
    z = vae.normalize(vae.encode(x).mode())   # x (B, 3, 4k+1, H, W) in [-1, 1]
"""
from .vae import CausalVideoVAE, DiagonalGaussian, VAEConfig

__all__ = ["CausalVideoVAE", "DiagonalGaussian", "VAEConfig"]
