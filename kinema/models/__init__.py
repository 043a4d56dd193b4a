"""The denoising network: a diffusion transformer over spacetime patches (dit.py) with 3D RoPE (rope.py).

Names are imported lazily so `python -m kinema.models.dit --list` does not import dit.py twice.
"""
__all__ = ["DiT", "DiTConfig", "PRESETS", "dit_config", "forward_flops"]


def __getattr__(name: str):
    if name in __all__:
        from . import dit
        return getattr(dit, name)
    raise AttributeError(f"module 'kinema.models' has no attribute {name!r}")
