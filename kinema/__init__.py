"""Kinema: text-to-video with a diffusion transformer over spacetime patches of video latents.

The package follows the pipeline: world/ and data/ (clips and data sets) -> eval/ (the judge).
Later stages (autoencoder, text encoder, transformer, flow, pipelines, serve) join as they land.
"""
__version__ = "0.1.0"
