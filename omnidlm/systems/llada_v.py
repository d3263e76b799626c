"""LLaDA-V's answerer for the registry (`specs.py`): a `Question` (`tasks.py`) -> the published
prompt (or the given prompt ids, -200 where the image goes) and sampler on the engine
(`sampling/llada_v.py`)."""

from __future__ import annotations

from .tasks import Question, image_as


def answer(loaded, q: Question) -> dict:
    from ..sampling import llada_v as V

    model, tok = loaded.model, loaded.tokenizer
    ids = q.prompt_ids if q.prompt_ids is not None else V.prompt_ids(tok, q.text)
    gen = q.gen_length or V.GEN_LENGTH
    defaults = loaded.system.sampling  # block length and steps default to the answer's length
    threshold = q.threshold if q.threshold is not None else defaults["threshold"]
    cfg = V.sampling_config(tok, gen, q.block_length or gen, q.steps or gen, q.policy or defaults["policy"],
                            threshold, q.cache or defaults["cache"], q.temperature)
    out = V.answer(model, tok, ids, [image_as(q.image, "RGB")], cfg)
    return {"output_ids": out, "text": V.answer_text(tok, out)}
