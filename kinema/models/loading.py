"""Building a module whose weights a file is about to replace, without filling them first.

Every nn.Linear, nn.Embedding and our own `initialize_weights` draw random weights when built;
loading a model folder then overwrites all of them. On the 2-core CPU those draws took ~0.6 s of
`kinema generate`'s ~12 s (the DiT's 0.36 s, MiniLM's 0.24 s). Inside `skip_init()` the fills of
`torch.nn.init` do nothing, so a module's tensors hold whatever memory they were given until
`load_state_dict` (strict: every tensor must come from the file) writes them. transformers'
`no_init_weights` does the same. Not for modules any tensor of which the file does not hold, and
not thread-safe: it swaps module attributes of torch.nn.init for the block's duration.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

FILLS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
         "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


@contextmanager
def skip_init() -> Iterator[None]:
    """Within the block, torch.nn.init's fills return their tensor untouched."""
    saved = {name: getattr(nn.init, name) for name in FILLS}
    try:
        for name in FILLS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fill in saved.items():
            setattr(nn.init, name, fill)
