"""LLaDA-V's prompts and answers: the published conversation template, the image placeholder in
token ids, the banned ids, and the requests the engine samples.

A text prompt becomes ids as the published code makes them:
    1. the conversation template `llava_llada`: its system prompt, then the user turn
       "<image>\\n{question}" (one "<image>" per image), rendered with the chat template
       (`sequence/chat.py`) and ending with the open assistant header;
    2. `tokenize_with_images`: the text is split at each "<image>", every piece is tokenized, and
       the pieces are joined with the placeholder -200. When the first piece starts with BOS, the
       published rule keeps that BOS once and drops the first token of every piece (a rule meant
       for tokenizers that prepend BOS to each piece: with LLaDA's tokenizer it drops the "\\n"
       after each image, and the fixtures record exactly that).

Sampling is LLaDA's reference sampler on the engine (`sampling/engine.py`): full attention, fixed
steps per block, low-confidence remasking, no cache, with EOS, BOS and the two header tokens banned
at masked positions (`banned_ids`, found in the checkpoint's tokenizer by name: the published code
hard-codes LLaDA-8B's ids 126081, 126080, 126346, 126347).

    ids = prompt_ids(tokenizer, "Please describe the image in detail.", n_images=1)
"""

from __future__ import annotations

from ..models.anyres import IMAGE_TOKEN_INDEX
from ..sequence.chat import render_chat

IMAGE_TOKEN = "<image>"
SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content "
          "that the user provides, and assist the user with a variety of tasks using natural language.")
BANNED_TOKENS = ("<|endoftext|>", "<|startoftext|>", "<|start_header_id|>", "<|end_header_id|>")
STOP_TOKEN = "<|eot_id|>"  # the published evaluation's stopping criterion


def render_prompt(question: str, n_images: int = 1) -> str:
    """The published conversation template: system prompt, user turn with the images first."""
    if not question or not question.strip():
        raise ValueError("the question (prompt) is empty")
    user = "".join(f"{IMAGE_TOKEN}\n" for _ in range(n_images)) + question
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user.strip()}]
    return render_chat(messages)  # the template trims each message, hence .strip()


def tokenize_with_images(tokenizer, text: str) -> list[int]:
    """Ids of `text` with -200 where each "<image>" stands, split as the published code splits."""
    pieces = [tokenizer.encode(piece) for piece in text.split(IMAGE_TOKEN)]
    bos = tokenizer.token_id("<|startoftext|>")
    offset = 1 if pieces[0] and pieces[0][0] == bos else 0
    ids = [bos] if offset else []
    for i, piece in enumerate(pieces):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids += piece[offset:]
    return ids


def prompt_ids(tokenizer, question: str, n_images: int = 1) -> list[int]:
    """The ids the published code gives the model for `question` about `n_images` images."""
    return tokenize_with_images(tokenizer, render_prompt(question, n_images))


def banned_ids(tokenizer) -> tuple[int, ...]:
    """The ids of EOS, BOS and the two header tokens in this checkpoint's tokenizer."""
    found = [tokenizer.token_id(t) for t in BANNED_TOKENS]
    missing = [t for t, i in zip(BANNED_TOKENS, found) if i is None]
    if missing:
        raise ValueError(f"the tokenizer has no {', '.join(missing)}: LLaDA-V's sampler bans these tokens")
    return tuple(found)
