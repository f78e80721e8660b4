"""Text -> token vectors: tokenizer, transformer, checkpoint loading, token projection.

``Encoder.from_pretrained(name_or_path)`` loads Jina-ColBERT-v2, Stanford ColBERT, PyLate
checkpoints (BERT or ModernBERT based), or a plain Hugging Face BERT / XLM-R / ModernBERT encoder (no ColBERT head: the vectors are
its L2-normalised last hidden states, no markers by default).
"""

from colbert_engine.model.config import CheckpointError, ColBERTSettings, TransformerConfig
from colbert_engine.model.encoder import Encoder
from colbert_engine.model.transformer import Transformer

__all__ = ["Encoder", "Transformer", "TransformerConfig", "ColBERTSettings", "CheckpointError"]
