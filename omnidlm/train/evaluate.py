"""Exact match on the held-out digit-ops examples with LLaDA2.0's block-causal threshold sampler.

    acc = synthetic_exact_match(model, tokenizer, n=64)["exact_match"]

Greedy (temperature 0) decoding with `sampling.reference.generate_llada2`: blocks of the model's
block size, every masked position above `threshold` committed per iteration (at least the
scheduled one), stop after the block holding EOS. The answer is the decoded text up to EOS.
"""

from __future__ import annotations

import time

import torch

from ..data.synthetic import MAX_DIGITS, char_accuracy, encode_example, heldout, score_exact
from ..sampling.reference import generate_llada2


@torch.no_grad()
def synthetic_exact_match(model, tokenizer, n: int = 64, threshold: float = 0.95, steps: int | None = None,
                          start: int = 0, progress: bool = False) -> dict:
    """Score held-out examples start .. start + n - 1; returns exact match, char accuracy, timings.
    `progress`: a bar over the examples (the final evaluation of a run takes minutes on a CPU)."""
    from tqdm.auto import tqdm

    cfg = model.config
    block = cfg.block_size
    gen_length = -(-(MAX_DIGITS + 1) // block) * block  # room for the longest answer and its EOS
    was_training = model.training
    model.eval()
    hits, chars, tokens, t0 = 0, 0.0, 0, time.perf_counter()
    for messages, answer in tqdm(heldout(start + n)[start:], desc="eval", unit="example", disable=not progress):
        prompt, _ = encode_example(messages, answer, tokenizer, cfg.eos_id)
        out = generate_llada2(model, prompt, gen_length=gen_length, block_length=block, steps=steps or block,
                              threshold=threshold)[0]
        text = tokenizer.decode(out.tolist())
        hits += score_exact(text, answer)
        chars += char_accuracy(text, answer)
        tokens += len(out)
    model.train(was_training)
    seconds = time.perf_counter() - t0
    return {"exact_match": hits / max(n, 1), "char_accuracy": chars / max(n, 1), "samples": n,
            "eval_seconds": seconds, "eval_tokens_per_s": tokens / max(seconds, 1e-9)}
