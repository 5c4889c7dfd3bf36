"""Text side of TEXTER: the CLIP tokenizer (concept strings -> token ids)."""

from texter_jax.text.tokenizer import ClipTokenizer, TokenizerError

__all__ = ["ClipTokenizer", "TokenizerError"]
