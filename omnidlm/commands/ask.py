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
from pathlib import Path

from .args import positive_int, probability, shipped_model, token_ids

DEFAULT_MODEL = shipped_model("lladao-digits")
MAX_PIXELS = 4096 * 4096


def _seeing_titles() -> str:
    """The systems `ask` answers with (those that see), from the registry: "A, B or C"."""
    from .. import systems

    titles = sorted(s.title for s in systems.SYSTEMS.values() if s.answer is not None)
    return ", ".join(titles[:-1]) + " or " + titles[-1] if len(titles) > 1 else titles[0]


SYSTEMS = _seeing_titles()


def read_image(path: str, max_pixels: int = MAX_PIXELS, mode: str | None = "L"):
    """An image file -> (H, W) grayscale float32 in [0, 1] (mode "L"), the PIL image in another
    mode ("RGB"), or as opened (None); ValueError naming the problem."""
    from ..serve.images import ImageError, open_pil
    from ..systems.tasks import image_as

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--image: no such file {path}")
    try:
        image = open_pil(file.read_bytes(), max_pixels)
    except ImageError as error:
        raise ValueError(f"--image {path}: {error}") from None
    return image_as(image, mode)


def register(sub) -> None:
    p = sub.add_parser("ask", help=f"answer a question about an image ({SYSTEMS}; Uni answers may draw)")
    p.add_argument("question", nargs="?", default=None, help="the question, e.g. 'What digit is shown?'")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"a {SYSTEMS} model directory")
    p.add_argument("--image", default=None, help="a PNG / JPEG image (white digit on black for the digits models)")
    p.add_argument("--prompt-ids", type=token_ids, default=None, help="the prompt as token ids instead of a question "
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


def seeing_system(path: str):
    """The system of a model directory, if it answers questions about images; else an error naming it."""
    from .. import systems

    try:
        system = systems.find(path)
    except FileNotFoundError as error:
        raise ValueError(f"--model {path}: not a {_seeing_titles()} model ({error})") from None
    if system.answer is None:
        raise ValueError(f"--model {path}: not a {_seeing_titles()} model (a {system.title} model)")
    return system


def question_of(args):
    """The parsed flags -> the system-neutral `Question` (the image as opened)."""
    from ..systems.tasks import Question

    image = read_image(args.image, args.max_pixels, mode=None) if args.image else None
    knobs = ("gen_length", "block_length", "steps", "policy", "threshold", "cache", "temperature")
    return Question(args.question, image, args.prompt_ids, **{k: getattr(args, k) for k in knobs})


def run(args) -> int:
    from .. import systems

    if args.prompt_ids is None and (args.question is None or not args.question.strip()):
        raise ValueError("the question is empty: give a question or --prompt-ids")
    system = seeing_system(args.model)
    if args.image is None and not system.answers_without_image:
        raise ValueError(f"this {system.name} model answers questions about an image: give --image FILE")
    question = question_of(args)
    answer = system.answer(systems.open(args.model), question)
    if "images" in answer:
        answer["images"] = write_images(answer["images"], args.out)
    if args.json:
        print(json.dumps(answer))
    else:
        print(answer["text"])
        for path in answer.get("images", []):
            print(path)
    return 0


def write_images(images, out: str | None) -> list[str]:
    """The images of an answer that draws -> `answer_<i>.png` files in --out (default: here)."""
    from .draw import save_png

    paths = []
    for i, img in enumerate(images):
        path = Path(out or ".") / f"answer_{i}.png"
        save_png(img, path, scale=4)
        paths.append(str(path))
    return paths
