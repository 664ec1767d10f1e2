"""Text: tokenizers, datasets, and token shards prepared on disk."""
