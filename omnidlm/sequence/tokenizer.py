"""Tokenizers: a thin wrapper over HF `tokenizers` reading a checkpoint's `tokenizer.json`.

Special ids (mask, EOS, EoT, pad) are the checkpoint config's business (`ModelConfig`); this file
only maps text to ids and back.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from .chat import render_chat


class Tokenizer:
    """Text <-> ids through a `tokenizers.Tokenizer`."""

    def __init__(self, hf: HFTokenizer):
        self.hf = hf

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer: {path} does not exist")
        return cls(HFTokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Ids of the chat-templated conversation (the prompt the model sees)."""
        return self.encode(render_chat(messages, add_generation_prompt=add_generation_prompt))
