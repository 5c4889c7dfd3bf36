"""Concept banks: the candidate texts that stage 3 ranks.

``banks`` reads / writes / merges banks in the release's JSON layout, plain text files
and the shipped generic bank; ``llm`` builds banks with any OpenAI-compatible endpoint.
"""

from texter_jax.concepts.banks import (
    ConceptBankError,
    class_bank_path,
    dedupe_exact,
    dedupe_similar,
    generic_bank,
    image_bank_path,
    image_vlm_path,
    load_class_bank,
    load_concepts,
    load_image_bank,
    mentions_class,
    merge_banks,
    resolve_bank,
    save_concepts,
    similarity,
)
from texter_jax.concepts.llm import (
    ChatClient,
    ConceptGenerator,
    LLMConfig,
    LLMError,
    llm_configured,
    parse_concepts,
)

__all__ = [
    "ChatClient", "ConceptBankError", "ConceptGenerator", "LLMConfig", "LLMError",
    "class_bank_path", "dedupe_exact", "dedupe_similar", "generic_bank", "image_bank_path",
    "image_vlm_path", "llm_configured", "load_class_bank", "load_concepts", "load_image_bank",
    "merge_banks", "mentions_class", "parse_concepts", "resolve_bank", "save_concepts",
    "similarity",
]
