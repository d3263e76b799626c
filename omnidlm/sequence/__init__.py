"""Sequences: chat templates, tokenizers and attention masks."""
