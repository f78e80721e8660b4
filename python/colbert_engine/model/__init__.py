"""Text -> token vectors: tokenizer, transformer, checkpoint loading, token projection."""
