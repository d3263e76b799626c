"""LLaDA2.0-Uni's answerer and drawing sampler for the registry (`specs.py`): a `Question` or
`Drawing` (`tasks.py`) -> `sampling/uni.py` and `sampling/image.py`.

An answer may hold images (interleaved answers, thinking before drawing): they come back as arrays
under "images" and the command writes them. Drawing samples image codes by block diffusion with CFG,
then the decoder (distilled, or the teacher's full ODE); with a source image it is an edit.
"""

from __future__ import annotations

from .tasks import Drawing, Drawn, Question, image_as

DRAW_OPTIONS = ("steps", "cfg", "full_ode")  # flag dests (commands/draw.py defines the flags)
CFG = 3.0  # the drawing sampler's guidance scale: what its drawings are measured at (eval/uni_digits.py);
# the spec's default (`sampling["cfg"]`) and the samplers' (sampling/image.py)


def answer(loaded, q: Question) -> dict:
    from ..sampling.uni import respond

    if q.prompt_ids is not None:
        raise ValueError("--prompt-ids is for LLaDA-V and published LLaDA-o checkpoints; a Uni model takes a question")
    model = loaded.model
    config = sampling_config(q, model.config.llm.block_size, loaded.system.sampling)
    ans = respond(model, loaded.tokenizer, q.text, image_as(q.image, "L"), config=config)
    return {"text": ans.text, "images": list(ans.images)}


def sampling_config(q: Question, block_size: int, defaults):
    """Uni's sampling settings (the system's threshold, the model's blocks, 128 tokens) with the knobs given."""
    import dataclasses

    from ..sampling.config import steps_per_block
    from ..sampling.policies import make_policy
    from ..sampling.uni import sampling_config as published

    threshold = q.threshold if q.threshold is not None else defaults["threshold"]
    cfg = published(q.gen_length or 128, threshold, temperature=q.temperature)
    cfg = dataclasses.replace(cfg, block_length=q.block_length or block_size, cache=q.cache or cfg.cache)
    per_block = steps_per_block(q.steps, cfg.max_new_tokens, cfg.block_length) if q.steps else cfg.policy.steps
    return dataclasses.replace(cfg, policy=make_policy(q.policy or defaults["policy"], per_block, threshold))


def draw(loaded, d: Drawing) -> Drawn:
    from ..sampling.image import draw_uni, edit_uni

    o, model, tok = d.options, loaded.model, loaded.tokenizer
    cfg = o["cfg"] if o.get("cfg") is not None else loaded.system.sampling["cfg"]
    kw = dict(n=d.n, seed=d.seed, cfg=cfg, distilled=not o.get("full_ode"), decoder_steps=o.get("steps"))
    if d.image is not None:
        return Drawn(edit_uni(model, tok, image_as(d.image, "L"), d.prompt, **kw))
    return Drawn(draw_uni(model, tok, [d.prompt], **kw))
