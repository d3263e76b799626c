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
    cfg = sampling_config(tokenizer, gen_length=128, block_length=32, steps=128)   # 32 steps per block
    out = answer(model, tokenizer, ids, [pil_image], cfg)                           # the generated ids
"""

from __future__ import annotations

import torch

from ..models.anyres import IMAGE_TOKEN_INDEX, embed_prompt
from ..sequence.chat import render_chat
from .config import steps_per_block
from .engine import BatchEngine, Request, SamplingConfig
from .policies import make_policy
from .prefix import Prefix

IMAGE_TOKEN = "<image>"
SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content "
          "that the user provides, and assist the user with a variety of tasks using natural language.")
BANNED_TOKENS = ("<|endoftext|>", "<|startoftext|>", "<|start_header_id|>", "<|end_header_id|>")
STOP_TOKEN = "<|eot_id|>"  # the published evaluation's stopping criterion
GEN_LENGTH = 128  # the default answer length (block length and steps default to it: one token per step)


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


# --- answers on the engine ----------------------------------------------------------------------------


def request(model, ids: list[int], images: list, gen_length: int) -> Request:
    """The engine request of one answer: the whole prompt (text and image features) as a prefix of
    embeddings at positions 0.. (LLaDA-V's sequence is plain: one position per embedding)."""
    embeds, _ = embed_prompt(model, ids, images)  # (P, D)
    prefix = Prefix(embeds, position_ids=torch.arange(embeds.shape[0]))
    return Request(prompt_ids=[], max_new_tokens=gen_length, prefix=prefix)


def sampling_config(tokenizer, gen_length: int, block_length: int, steps: int, policy: str = "fixed",
                    threshold: float = 0.9, cache: str = "none", temperature: float = 0.0) -> SamplingConfig:
    """The published sampler's settings on the engine: full attention, no EOS stop, banned ids."""
    per_block = steps_per_block(steps, gen_length, block_length)
    return SamplingConfig(max_new_tokens=gen_length, block_length=block_length, attention="full", cache=cache,
                          policy=make_policy(policy, per_block, threshold), temperature=temperature,
                          stop_at_eos=False, ban_ids=banned_ids(tokenizer))


@torch.no_grad()
def answer(model, tokenizer, ids: list[int], images: list, config: SamplingConfig) -> list[int]:
    """The generated ids (config.max_new_tokens of them, as the published `generate` returns)."""
    result = BatchEngine(model.language_model, config, max_batch=1).run([request(model, ids, images, config.max_new_tokens)])
    return result[0].tokens


def answer_text(tokenizer, ids: list[int]) -> str:
    """The answer's text, up to the published evaluation's stop word `<|eot_id|>`."""
    stop = tokenizer.token_id(STOP_TOKEN)
    return tokenizer.decode(ids[: ids.index(stop)] if stop in ids else ids)
