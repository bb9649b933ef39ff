"""Text embeddings of items (documents): metadata → text → sentence encoder → vectors, cached; embedding files
from elsewhere; rows in a vocabulary's order. See `circuits.text.encoder` (models, text format, cache) and
`circuits.text.embeddings` (files, `align`). Importable without sentence-transformers: only encoding needs it.
"""

from circuits.text.embeddings import (
    EMBEDDING_SUFFIXES,
    ItemEmbeddings,
    align,
    is_embedding_file,
    read_embeddings,
    write_embeddings,
)
from circuits.text.encoder import (
    DEFAULT_MODEL,
    MINILM_SHA256,
    TEXT_COLUMNS,
    TextModel,
    dataset_embeddings,
    embeddings_for,
    encode_items,
    item_texts,
    resolve_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDING_SUFFIXES",
    "MINILM_SHA256",
    "TEXT_COLUMNS",
    "ItemEmbeddings",
    "TextModel",
    "align",
    "dataset_embeddings",
    "embeddings_for",
    "encode_items",
    "is_embedding_file",
    "item_texts",
    "read_embeddings",
    "resolve_model",
    "write_embeddings",
]
