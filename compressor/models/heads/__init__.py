"""Detection heads a user model can reuse (torch side; their numpy decoders live in
runtime.decoders)."""

from compressor.models.heads.anchor_free import AnchorFreeHead, decode_torch, flatten_levels

__all__ = ["AnchorFreeHead", "decode_torch", "flatten_levels"]
