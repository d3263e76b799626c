"""`omnidlm ask`: answer a question about an image with a LLaDA-o model.

    omnidlm ask --model models/lladao-digits --image digit.png "What digit is shown?"

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
    p.set_defaults(func=run)


def run(args) -> int:
    if not args.question.strip():
        raise ValueError("the question is empty")
    image = read_image(args.image, args.max_pixels) if args.image else None
    from ..sampling.omni import understand
    from ..train.omni import load_omni

    model, tok = load_omni(args.model)
    answer = understand(model, tok, image, args.question, block_length=args.block_length, threshold=args.threshold)
    print(answer.text)
    return 0
