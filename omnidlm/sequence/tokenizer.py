"""Tokenizers: a checkpoint's `tokenizer.json`, with its own chat template where it ships one.

- A checkpoint with `tokenizer.json` + `tokenizer_config.json` (LLaDA-8B-Instruct, LLaDA2.0,
  LLaDA-V) is read through `transformers.AutoTokenizer`, and chat prompts are rendered with the
  checkpoint's `chat_template` (`apply_chat_template`), so they equal what its model card builds.
- A bare `tokenizer.json` (the character tokenizer of the shipped tiny models) is read with HF
  `tokenizers`; chat prompts use LLaDA's built-in template (`sequence/chat.py`).

Special tokens typed by a user are text: `encode(text, split_special_tokens=True)` encodes
`<|eot_id|>` as its characters, and `encode_chat` encodes every message's content that way, so
only the template inserts special ids. Special ids (mask, EOS, EoT, pad) are the checkpoint
config's business (`ModelConfig`); this file only maps text to ids and back.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from .chat import chat_pieces, check_messages, render_chat


class Tokenizer:
    """Text <-> ids through a `tokenizers.Tokenizer`; chat prompts through `chat_template` if given.

    `pretrained` is the `transformers` tokenizer when the checkpoint has a tokenizer_config.json
    (its `chat_template` and special-token names come from there).
    """

    def __init__(self, hf: HFTokenizer, pretrained=None):
        self.hf = hf
        self.pretrained = pretrained
        # a second copy that reads special-token strings as plain text; a copy rather than a
        # toggled flag, so concurrent encodes (server threads) never see each other's setting
        self._text_only = HFTokenizer.from_str(hf.to_str())
        self._text_only.encode_special_tokens = True

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        """A tokenizer.json file, or a checkpoint directory (with tokenizer_config.json if it has one)."""
        path = Path(path)
        directory = path if path.is_dir() else None
        if directory is not None:
            path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer: {path} does not exist")
        if directory is not None and (directory / "tokenizer_config.json").is_file():
            return cls.from_pretrained(directory)
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as error:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"{path}: not a readable tokenizer.json ({error})") from None

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Tokenizer":
        """Through `transformers.AutoTokenizer` (no network: a local directory)."""
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity(logging.ERROR)  # it warns that config.json's model type is not a tokenizer's
        try:
            with warnings.catch_warnings():  # and about config fields it reads on the way
                warnings.simplefilter("ignore", FutureWarning)
                pretrained = AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError) as error:
            raise ValueError(f"{directory}: the tokenizer does not load ({error})") from None
        finally:
            hf_logging.set_verbosity(level)
        backend = getattr(pretrained, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"{directory}: {type(pretrained).__name__} has no tokenizer.json backend")
        return cls(backend, pretrained)

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def chat_template(self) -> str | None:
        """The checkpoint's own template, or None (then LLaDA's built-in one is used)."""
        return getattr(self.pretrained, "chat_template", None) or None

    def encode(self, text: str, split_special_tokens: bool = False) -> list[int]:
        """Ids of `text`; with `split_special_tokens` a special token's text is encoded as text."""
        tok = self._text_only if split_special_tokens else self.hf
        return tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text: the checkpoint's `chat_template` if it has one, else LLaDA's."""
        check_messages(messages)
        if self.chat_template is None:
            return render_chat(messages, add_generation_prompt=add_generation_prompt)
        return self.pretrained.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Ids of the chat-templated conversation (the prompt the model sees).

        Message content is text: special-token strings inside it are not special ids. Content
        without any such string is encoded in one piece, exactly as the model card does.
        """
        def render(msgs):
            return self.render_chat(msgs, add_generation_prompt)

        if not any(self._has_special_text(m["content"]) for m in messages if isinstance(m, dict)
                   and isinstance(m.get("content"), str)):
            return self.encode(render(messages))
        ids = []
        for text, is_content in chat_pieces(render, messages):
            ids += self.encode(text, split_special_tokens=is_content)
        return ids

    def _has_special_text(self, text: str) -> bool:
        return any(t.special and t.content in text for t in self.hf.get_added_tokens_decoder().values())
