"""Text encoders: captions -> per-token states and a mask, plus a caption-embedding cache."""
from .cache import CachedTextEncoder
from .encoders import (MINILM, HFTextEncoder, TextEncoder, TextEncoderConfig, TextEncoderError,
                       build_text_encoder, load_text_encoder)

__all__ = ["MINILM", "CachedTextEncoder", "HFTextEncoder", "TextEncoder", "TextEncoderConfig",
           "TextEncoderError", "build_text_encoder", "load_text_encoder"]
