"""An `lm-eval` (EleutherAI lm-evaluation-harness) model adapter, registered as `omnidlm`.

- `loglikelihood`: the Monte Carlo ELBO of the continuation given the context
  (`omnidlm.eval.likelihood`, the LLaDA estimator); `is_greedy` is not defined for a diffusion
  model and is reported False.
- `loglikelihood_rolling`: the ELBO of the whole text given nothing.
- `generate_until`: the batched inference engine (threshold decoding, exact or approximate cache),
  cut at the first stop string.

Importing this module registers the model; this module is also a drop-in for lm-eval's CLI:

    python -m omnidlm.eval.lm_eval_adapter --model omnidlm --model_args pretrained=PATH --tasks gsm8k
"""

from __future__ import annotations

import sys

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ..sampling.engine import SamplingConfig, generate
from ..sampling.policies import Threshold
from .likelihood import loglikelihood


def likelihood_batches(mc_num, mc_batch) -> tuple[int, int]:
    """(mc_num, mc_batch): mc_batch defaults to min(16, mc_num) and must divide mc_num."""
    mc_num = int(mc_num)
    mc_batch = min(16, mc_num) if mc_batch is None else int(mc_batch)
    if mc_num < 1 or mc_batch < 1 or mc_num % mc_batch:
        raise ValueError(f"mc_num ({mc_num}) must be a positive multiple of mc_batch ({mc_batch})")
    return mc_num, mc_batch


def resolve_device(device: str | None) -> str:
    """lm-eval passes its own default, cuda, even on a machine without a GPU: use the CPU there
    (and say so), as lm-eval's own HF model does."""
    if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        if device is not None:
            print(f"omnidlm lm-eval adapter: device {device} requested but there is no GPU; using cpu",
                  file=sys.stderr)
        return "cuda" if device is None and torch.cuda.is_available() else "cpu"
    return str(device)


@register_model("omnidlm")
class OmnidlmLM(LM):
    def __init__(self, pretrained: str, mc_num: int = 64, mc_batch: int | None = None, max_gen_toks: int = 256,
                 threshold: float = 0.9, chat: bool = False, device: str | None = None, batch_size=8, **_):
        super().__init__()
        from .. import systems

        self.mc_num, self.mc_batch = likelihood_batches(mc_num, mc_batch)
        self.max_gen_toks, self.threshold = int(max_gen_toks), float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.chat = chat if isinstance(chat, bool) else str(chat).lower() in ("1", "true", "yes")
        self.batch = 8 if str(batch_size).startswith("auto") else int(batch_size)
        self._device = resolve_device(device)  # LM.device reads it
        loaded = systems.open(pretrained, device=self._device)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer

    def _encode_context(self, text: str) -> list[int]:
        if self.chat:
            return self.tokenizer.encode_chat([{"role": "user", "content": text}])
        return self.tokenizer.encode(text)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        out = []
        generator = torch.Generator(device=self.model.device).manual_seed(0)
        for request in requests:
            context, continuation = request.args
            answer = self.tokenizer.encode(continuation)
            ll = loglikelihood(self.model, self._encode_context(context), answer, mc_num=self.mc_num,
                               batch_size=self.mc_batch, generator=generator) if answer else 0.0
            out.append((ll, False))
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        generator = torch.Generator(device=self.model.device).manual_seed(0)
        return [loglikelihood(self.model, [], self.tokenizer.encode(r.args[0]), mc_num=self.mc_num,
                              batch_size=self.mc_batch, generator=generator) for r in requests]

    def generate_until(self, requests) -> list[str]:
        cfg = self.model.config
        cache = "exact" if cfg.attention == "block" else "approx"
        prompts = [self._encode_context(r.args[0]) for r in requests]
        stops = [r.args[1].get("until", []) or [] for r in requests]
        limits = [int(r.args[1].get("max_gen_toks", self.max_gen_toks)) for r in requests]
        config = SamplingConfig(max_new_tokens=max(limits), cache=cache,
                                policy=Threshold(self.threshold, cfg.block_size))
        results = generate(self.model, prompts, config, max_batch=self.batch)
        return [self._cut(res.tokens, until) for res, until in zip(results, stops)]

    def _cut(self, tokens: list[int], until: list[str]) -> str:
        text = self.tokenizer.decode([t for t in tokens if t != self.model.config.eos_id])
        cuts = [text.find(s) for s in until if s and s in text]
        return text[: min(cuts)] if cuts else text


if __name__ == "__main__":
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
