"""`omnidlm ask`: answer a question about an image with a LLaDA-o or LLaDA2.0-Uni model.

    omnidlm ask --model models/lladao-digits --image digit.png "What digit is shown?"
    omnidlm ask --model models/uni-digits --image digit.png "What digit is shown?"
    omnidlm ask --model models/uni-digits "Draw the digits 3 and 5." --out answer/   # Uni: images in answers

The image is read with a pixel limit (decompression bombs), converted to grayscale and resized to
the model's image size; a non-image or truncated file, an empty question or a model without a
vision encoder is a clear error and a non-zero exit.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "models/lladao-digits"
MAX_PIXELS = 4096 * 4096


def read_image(path: str, max_pixels: int = MAX_PIXELS):
    """An image file -> (H, W) grayscale float32 in [0, 1]; ValueError naming the problem."""
    from ..serve.images import ImageError, open_image

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--image: no such file {path}")
    try:
        return open_image(file.read_bytes(), max_pixels)
    except ImageError as error:
        raise ValueError(f"--image {path}: {error}") from None


def register(sub) -> None:
    p = sub.add_parser("ask", help="answer a question about an image (LLaDA-o)")
    p.add_argument("question", help="the question, e.g. 'What digit is shown?'")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a LLaDA-o model directory")
    p.add_argument("--image", default=None, help="a PNG / JPEG image (white digit on black for the digits model)")
    p.add_argument("--threshold", type=float, default=0.95, help="commit tokens at least this confident")
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="refuse larger images")
    p.add_argument("--out", default=None, help="Uni: directory for the images of an answer that draws")
    p.set_defaults(func=run)


def run(args) -> int:
    if not args.question.strip():
        raise ValueError("the question is empty")
    image = read_image(args.image, args.max_pixels) if args.image else None
    from ..train.uni import is_uni_dir

    if is_uni_dir(args.model):
        return run_uni(args, image)
    from ..sampling.omni import understand
    from ..train.omni import load_omni

    model, tok = load_omni(args.model)
    answer = understand(model, tok, image, args.question, block_length=args.block_length, threshold=args.threshold)
    print(answer.text)
    return 0


def run_uni(args, image) -> int:
    """A Uni answer may hold images (interleaved or thinking answers): they are written to --out."""
    from ..sampling.uni import respond, sampling_config
    from ..train.uni import load_uni_model
    from .draw import save_png

    model, tok = load_uni_model(args.model)
    answer = respond(model, tok, args.question, image, config=sampling_config(threshold=args.threshold))
    print(answer.text)
    for i, img in enumerate(answer.images):
        path = Path(args.out or ".") / f"answer_{i}.png"
        save_png(img, path, scale=4)
        print(path)
    return 0
