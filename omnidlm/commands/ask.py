"""`omnidlm ask`: answer a question about an image with a LLaDA-V, LLaDA-o or LLaDA2.0-Uni model
(Uni answers may also draw: interleaved text and images, or thinking before drawing).

    omnidlm ask --model LLaDA-V/ --image photo.jpg "Please describe the image in detail."
    omnidlm ask --model LLaDA-V/ --image photo.jpg --prompt-ids "256,260,...,-200,...,10" --json
    omnidlm ask --model models/lladao-digits --image digit.png "What digit is shown?"
    omnidlm ask --model models/uni-digits "Draw the digits 3 and 5." --out answer/ --json

The sampling knobs mean what the published samplers' arguments mean: `--gen-length` tokens are
generated in blocks of `--block-length`, `--steps` is the number of denoising steps over the whole
answer (steps per block = steps x block_length / gen_length), `--policy` commits the scheduled count
per step (fixed) or everything above `--threshold` (threshold), `--cache` is the engine's cache mode.
A question is wrapped in the model's conversation template; `--prompt-ids` gives the ids instead
(LLaDA-V: the whole prompt, -200 where the image goes; LLaDA-o: the question's ids before the
model's own wrapping). `--json` prints one object: `output_ids` and `text`, plus `images` (paths)
for an answer that draws. A model that sees needs `--image` (Uni may answer without one); a
non-image or truncated file, an empty question or a model without a vision encoder is a clear error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .args import positive_int, probability, shipped_model

DEFAULT_MODEL = shipped_model("lladao-digits")
MAX_PIXELS = 4096 * 4096
SYSTEMS = "LLaDA-V, LLaDA-o or LLaDA2.0-Uni"


def read_image(path: str, max_pixels: int = MAX_PIXELS, mode: str | None = "L"):
    """An image file -> (H, W) grayscale float32 in [0, 1] (mode "L"), or the PIL image in RGB
    (mode "RGB"); ValueError naming the problem."""
    import numpy as np

    from ..serve.images import ImageError, open_pil

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--image: no such file {path}")
    try:
        image = open_pil(file.read_bytes(), max_pixels)
    except ImageError as error:
        raise ValueError(f"--image {path}: {error}") from None
    if mode == "L":
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return image.convert(mode)


def parse_ids(text: str) -> list[int]:
    """--prompt-ids "1,2,-200,3" (commas and / or spaces, optional brackets) -> [1, 2, -200, 3]."""
    parts = [p for p in re.split(r"[\s,]+", text.strip().strip("[]")) if p]
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--prompt-ids must be integers separated by commas or spaces, got {text!r}") from None
    if not ids:
        raise ValueError("--prompt-ids is empty")
    return ids


def register(sub) -> None:
    p = sub.add_parser("ask", help=f"answer a question about an image ({SYSTEMS}; Uni answers may draw)")
    p.add_argument("question", nargs="?", default=None, help="the question, e.g. 'What digit is shown?'")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"a {SYSTEMS} model directory")
    p.add_argument("--image", default=None, help="a PNG / JPEG image (white digit on black for the digits models)")
    p.add_argument("--prompt-ids", default=None, help="the prompt as token ids instead of a question "
                   "(LLaDA-V: -200 where the image goes; LLaDA-o: the question's ids before the model's wrapping)")
    p.add_argument("--gen-length", type=int, default=None, help="tokens to generate (default: the system's)")
    p.add_argument("--block-length", type=positive_int, default=None, help="tokens per block (default: the system's)")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps over the whole answer; steps per block = steps x block_length / gen_length")
    p.add_argument("--policy", choices=("fixed", "threshold", "factor"), default=None,
                   help="fixed: the scheduled count per step; threshold: everything above --threshold")
    p.add_argument("--threshold", type=probability, default=None, help="commit tokens at least this confident")
    p.add_argument("--cache", choices=("none", "exact", "approx"), default=None, help="the engine's cache mode")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--json", action="store_true", help="print one JSON object (output_ids, text, images)")
    p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="refuse larger images")
    p.add_argument("--out", default=None, help="Uni: directory for the images of an answer that draws")
    p.set_defaults(func=run)


def system_of(path: str) -> str:
    """Which system a model directory holds: "llada-v", "uni" or "lladao"; else an error naming the files."""
    from .. import systems

    try:
        system = systems.find(path)
    except FileNotFoundError as error:
        raise ValueError(f"--model {path}: not a {SYSTEMS} model ({error})") from None
    if system.name not in ANSWERS:
        raise ValueError(f"--model {path}: not a {SYSTEMS} model (a {system.title} model)")
    return system.name


def run(args) -> int:
    if args.prompt_ids is None and (args.question is None or not args.question.strip()):
        raise ValueError("the question is empty: give a question or --prompt-ids")
    system = system_of(args.model)
    if args.image is None and system != "uni":
        raise ValueError(f"this {system} model answers questions about an image: give --image FILE")
    answer = ANSWERS[system](args)
    if args.json:
        print(json.dumps(answer))
    else:
        print(answer["text"])
        for path in answer.get("images", []):
            print(path)
    return 0


def answer_llada_v(args) -> dict:
    """LLaDA-V: the published prompt (or --prompt-ids) and sampler on the engine."""
    from .. import systems
    from ..sampling import llada_v as V

    image = read_image(args.image, args.max_pixels, mode="RGB")
    loaded = systems.open(args.model)
    model, tok = loaded.model, loaded.tokenizer
    ids = parse_ids(args.prompt_ids) if args.prompt_ids is not None else V.prompt_ids(tok, args.question)
    gen = args.gen_length or V.GEN_LENGTH
    cfg = V.sampling_config(tok, gen, args.block_length or gen, args.steps or gen, args.policy or "fixed",
                            args.threshold if args.threshold is not None else 0.9, args.cache or "none",
                            args.temperature)
    out = V.answer(model, tok, ids, [image], cfg)
    return {"output_ids": out, "text": V.answer_text(tok, out)}


def answer_lladao(args) -> dict:
    """LLaDA-o. A published checkpoint (it ships new_token_ids.json) answers in the published chat
    layout with the published samplers' knobs; the digits models answer in their own template."""
    from ..formats.lladao import image_marker_ids

    markers = image_marker_ids(args.model)
    if markers is None:
        return answer_digits(args)
    from .. import systems
    from ..models.anyres import to_pixels
    from ..sampling.omni import published_answer

    loaded = systems.open(args.model)
    model, tok = loaded.model, loaded.tokenizer
    pixels = to_pixels(read_image(args.image, args.max_pixels, mode="RGB"))  # the published (x / 255 - 0.5) / 0.5
    ids = parse_ids(args.prompt_ids) if args.prompt_ids is not None else tok.encode(args.question)
    gen = args.gen_length or 128
    block = args.block_length or gen
    out = published_answer(model, ids, pixels, markers, gen, block, args.steps or gen, args.policy or "fixed",
                           args.threshold if args.threshold is not None else 0.95, args.cache or "none",
                           args.temperature)
    return {"output_ids": out, "text": tok.decode(out) if tok is not None else None}


def answer_digits(args) -> dict:
    """The digits models (models/lladao-digits): their template, threshold decoding per block."""
    from ..sampling.config import steps_per_block
    from ..sampling.omni import understand
    from .. import systems

    if args.prompt_ids is not None:
        raise ValueError("--prompt-ids is for published LLaDA-o checkpoints (with new_token_ids.json); "
                         "this model takes a question")
    loaded = systems.open(args.model)
    model, tok = loaded.model, loaded.tokenizer
    block = args.block_length or 32
    gen = args.gen_length or 4 * block
    per_block = steps_per_block(args.steps, gen, block) if args.steps else None
    ans = understand(model, tok, read_image(args.image, args.max_pixels), args.question, block_length=block,
                     max_blocks=gen // block, steps=per_block,
                     threshold=args.threshold if args.threshold is not None else 0.95)
    return {"output_ids": ans.ids, "text": ans.text}


def answer_uni(args) -> dict:
    """Uni: an answer may hold images (interleaved or thinking answers): they are written to --out."""
    from .. import systems
    from ..sampling.uni import respond
    from .draw import save_png

    image = read_image(args.image, args.max_pixels) if args.image else None
    loaded = systems.open(args.model)
    model, tok = loaded.model, loaded.tokenizer
    answer = respond(model, tok, args.question, image, config=uni_config(args, model.config.llm.block_size))
    paths = []
    for i, img in enumerate(answer.images):
        path = Path(args.out or ".") / f"answer_{i}.png"
        save_png(img, path, scale=4)
        paths.append(str(path))
    return {"text": answer.text, "images": paths}


def uni_config(args, block_size: int):
    """Uni's sampling settings (threshold 0.95, the model's blocks, 128 tokens) with the flags given."""
    import dataclasses

    from ..sampling.config import steps_per_block
    from ..sampling.policies import make_policy
    from ..sampling.uni import sampling_config

    threshold = args.threshold if args.threshold is not None else 0.95
    cfg = sampling_config(args.gen_length or 128, threshold, temperature=args.temperature)
    cfg = dataclasses.replace(cfg, block_length=args.block_length or block_size, cache=args.cache or cfg.cache)
    per_block = steps_per_block(args.steps, cfg.max_new_tokens, cfg.block_length) if args.steps else cfg.policy.steps
    return dataclasses.replace(cfg, policy=make_policy(args.policy or "threshold", per_block, threshold))


ANSWERS = {"llada-v": answer_llada_v, "lladao": answer_lladao, "uni": answer_uni}
