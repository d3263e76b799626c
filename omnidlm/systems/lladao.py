"""LLaDA-o's answerer and drawing sampler for the registry (`specs.py`): a `Question` or `Drawing`
(`tasks.py`) -> the sampling calls of `sampling/omni.py` and `sampling/image.py`.

A published checkpoint (it ships new_token_ids.json) answers in the published chat layout with the
published samplers' knobs; the digits models answer in their own template. Drawing takes the
published inferencer's knobs by their published meaning (docs/architecture.md, "Drawing").
"""

from __future__ import annotations

from .tasks import Drawing, Drawn, Question, image_as

# the spec's defaults (`sampling`), what the digits models' accuracies are measured at
# (models/lladao-digits/README.md); eval/omni_digits.py and `omnidlm demo` default to them too
THRESHOLD = 0.95  # an answer commits every token at least this confident
DRAW_STEPS = 30  # Euler steps of a drawing (grid points: 31, the published inferencer's default)
CFG = 4.0  # text CFG of a drawing (the published inferencer's default)

# the options `omnidlm draw` / `edit` may hand `draw` (flag dests; commands/draw.py defines the flags)
DRAW_OPTIONS = ("steps", "cfg", "img_cfg", "prompt_ids", "height", "width", "num_timesteps", "cfg_interval",
                "timestep_shift", "cfg_renorm_min", "cfg_renorm_type", "init_noise", "save_latent")


def answer(loaded, q: Question) -> dict:
    from ..formats.lladao import image_marker_ids

    markers = image_marker_ids(loaded.directory)
    return answer_digits(loaded, q) if markers is None else answer_published(loaded, q, markers)


def answer_published(loaded, q: Question, markers: tuple[int, int]) -> dict:
    """The published chat: the question's ids (or `prompt_ids`) wrapped by the model, its samplers' knobs."""
    from ..models.anyres import to_pixels
    from ..sampling.omni import published_answer

    model, tok = loaded.model, loaded.tokenizer
    pixels = to_pixels(image_as(q.image, "RGB"))  # the published (x / 255 - 0.5) / 0.5
    ids = q.prompt_ids if q.prompt_ids is not None else tok.encode(q.text)
    gen = q.gen_length or 128
    threshold = q.threshold if q.threshold is not None else loaded.system.sampling["threshold"]
    out = published_answer(model, ids, pixels, markers, gen, q.block_length or gen, q.steps or gen,
                           q.policy or "fixed", threshold, q.cache or "none", q.temperature)
    return {"output_ids": out, "text": tok.decode(out) if tok is not None else None}


def answer_digits(loaded, q: Question) -> dict:
    """The digits models (models/lladao-digits): their template, threshold decoding per block."""
    from ..sampling.config import steps_per_block
    from ..sampling.omni import understand

    if q.prompt_ids is not None:
        raise ValueError("--prompt-ids is for published LLaDA-o checkpoints (with new_token_ids.json); "
                         "this model takes a question")
    defaults = loaded.system.sampling
    block = q.block_length or defaults["block_length"]
    gen = q.gen_length or 4 * block
    per_block = steps_per_block(q.steps, gen, block) if q.steps else None
    threshold = q.threshold if q.threshold is not None else defaults["threshold"]
    ans = understand(loaded.model, loaded.tokenizer, image_as(q.image, "L"), q.text, block_length=block,
                     max_blocks=gen // block, steps=per_block, threshold=threshold)
    return {"output_ids": ans.ids, "text": ans.text}


def flow_settings(options, defaults):
    """The drawing options -> FlowSettings (the system's defaults and the published ones where not given)."""
    from ..sampling.image import FlowSettings

    if options.get("steps") is not None and options.get("num_timesteps") is not None:
        raise ValueError("give --steps (Euler steps) or --num-timesteps (grid points), not both")
    given = {k: options[k] for k in ("timestep_shift", "cfg_renorm_min", "cfg_renorm_type", "img_cfg")
             if options.get(k) is not None}
    if "img_cfg" in given:
        given["cfg_img_scale"] = given.pop("img_cfg")
    if options.get("cfg_interval") is not None:
        given["cfg_interval"] = tuple(options["cfg_interval"])
    steps = options.get("num_timesteps")
    if steps is None:
        steps = (options.get("steps") or defaults["draw_steps"]) + 1  # grid points: Euler steps + 1
    cfg = options["cfg"] if options.get("cfg") is not None else defaults["cfg"]
    return FlowSettings(num_timesteps=steps, cfg_text_scale=cfg, **given)


def draw(loaded, d: Drawing) -> Drawn:
    """Images from a text prompt (an edit with `d.image`), or one image from `prompt_ids` in the
    published layout (its `init_noise`, `height`, `width`)."""
    from ..formats.lladao import image_marker_ids
    from ..models.latents import decode_latents
    from ..sampling import image as I

    o, model = d.options, loaded.model
    settings = flow_settings(o, loaded.system.sampling)
    if not model.can_draw:
        raise ValueError(f"the model at {loaded.directory} has no generation expert: it cannot draw")
    if o.get("prompt_ids") is None:
        if any(o.get(k) is not None for k in ("init_noise", "height", "width")):
            raise ValueError("--init-noise, --height and --width go with --prompt-ids")
        images, z = I.draw_lladao(model, loaded.tokenizer, [d.prompt], n=d.n, seed=d.seed, settings=settings,
                                  image=image_as(d.image, "L"), progress=d.progress, return_latents=True)
        return Drawn(images, z)
    if d.image is not None or d.n != 1:
        raise ValueError("--prompt-ids draws one image from token ids: no --image, -n 1")
    z = I.draw_lladao_ids(model, o["prompt_ids"], o.get("height"), o.get("width"), settings, o.get("init_noise"),
                          d.seed, image_marker_ids(loaded.directory), progress=d.progress)[None]
    return Drawn(I.to_uint8(decode_latents(model.vae, z)), z)  # (1, H, W, 3), as the published decode_image
