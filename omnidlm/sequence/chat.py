"""The Llama-3 style chat template used by LLaDA (REFERENCE.md §1).

    <|startoftext|><|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\n\n

`render_chat` turns a list of `{"role", "content"}` messages into that text; the tokenizer turns
the special markers into their single ids.
"""

from __future__ import annotations

BOS = "<|startoftext|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
ROLES = ("system", "user", "assistant")


def render_turn(role: str, content: str) -> str:
    """One finished turn: header, blank line, content, end-of-turn marker."""
    return f"{START_HEADER}{role}{END_HEADER}\n\n{content}{EOT}"


def render_chat(messages: list[dict], add_generation_prompt: bool = True, bos: bool = True) -> str:
    """Render messages; with `add_generation_prompt` end with an open assistant header."""
    parts = [BOS] if bos else []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i}: role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string, got {type(content).__name__}")
        parts.append(render_turn(role, content))
    if add_generation_prompt:
        parts.append(f"{START_HEADER}assistant{END_HEADER}\n\n")
    return "".join(parts)
