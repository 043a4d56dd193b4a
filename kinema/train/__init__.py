"""Training: DiT (flow matching) on autoencoder latents; distribution applied from outside."""
