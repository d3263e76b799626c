"""Chat prompts: LLaDA's built-in template, and splitting any rendered template into its parts.

The built-in template is the Llama-3 style one LLaDA uses (docs/published/llada.md):

    <|startoftext|><|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\n\n

`render_chat` turns a list of `{"role", "content"}` messages into that text; the tokenizer turns
the special markers into their single ids. Checkpoints that ship their own `chat_template`
(tokenizer_config.json) are rendered by that template instead (`sequence/tokenizer.py`).

`chat_pieces` cuts a rendered conversation into template text and message content, so that only
the template's own markers become special ids: a user who types `<|eot_id|>` gets those
characters, not an end of turn (role spoofing, mask injection).
"""

from __future__ import annotations

import re
from typing import Callable

BOS = "<|startoftext|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
ROLES = ("system", "user", "assistant")

# private-use characters that no template adds or strips: they mark where message i is rendered
_MARK = "\ue000{}\ue001"
_MARK_RE = re.compile("\ue000(\\d+)\ue001")


def check_messages(messages: list[dict]) -> None:
    """Each message is {"role": one of ROLES, "content": str}; ValueError naming the message."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"message {i}: must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i}: role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string, got {type(content).__name__}")


def render_turn(role: str, content: str) -> str:
    """One finished turn: header, blank line, content, end-of-turn marker."""
    return f"{START_HEADER}{role}{END_HEADER}\n\n{content}{EOT}"


def render_chat(messages: list[dict], add_generation_prompt: bool = True, bos: bool = True) -> str:
    """Render messages; with `add_generation_prompt` end with an open assistant header."""
    check_messages(messages)
    parts = [BOS] if bos else []
    parts += [render_turn(m["role"], m["content"]) for m in messages]
    if add_generation_prompt:
        parts.append(f"{START_HEADER}assistant{END_HEADER}\n\n")
    return "".join(parts)


def chat_pieces(render: Callable[[list[dict]], str], messages: list[dict]) -> list[tuple[str, bool]]:
    """[(text, is_content)] whose concatenation is `render(messages)`.

    The template is rendered a second time with a marker in place of each content; the text
    between markers is the template's. A template may trim a content (LLaDA's does), so the
    rendered content is the original or its stripped form, whichever the real rendering holds.
    """
    real = render(messages)
    marked = render([{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)])
    parts = _MARK_RE.split(marked)  # literal, index, literal, index, ..., literal
    pieces, pos = [], 0
    for k in range(0, len(parts), 2):
        literal = parts[k]
        if not real.startswith(literal, pos):
            raise ValueError("the chat template renders differently on the same messages")
        pieces.append((literal, False))
        pos += len(literal)
        if k + 1 < len(parts):
            content = messages[int(parts[k + 1])]["content"]
            after = parts[k + 2]
            shown = next((c for c in (content, content.strip(), content.lstrip(), content.rstrip())
                          if real.startswith(c + after, pos)), None)
            if shown is None:
                raise ValueError("the chat template changes message content in a way omnidlm cannot follow")
            pieces.append((shown, True))
            pos += len(shown)
    if pos != len(real):
        raise ValueError("the chat template renders differently on the same messages")
    return [p for p in pieces if p[0]]
