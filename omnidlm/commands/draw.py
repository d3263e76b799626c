"""`omnidlm draw`: draw images from a text prompt with a LLaDA-o or LLaDA2.0-Uni model (or edit an image).

    omnidlm draw --model models/lladao-digits "a handwritten digit 7" --out drawings/ -n 4 --seed 0
    omnidlm draw "a handwritten digit 7" --out seven.png                 # one file
    omnidlm draw "..." --image in.png --img-cfg 1.5 --out edited.png      # editing with image CFG
    omnidlm draw --model models/uni-digits "a handwritten digit 7" -n 4    # Uni: codes, then the decoder
    omnidlm edit --model models/uni-digits --image in.png "Change the digit to 7." --out out.png

`--out` is a directory (files `draw_<seed>_<i>.png`) or, for -n 1, a `.png` path (for -n > 1 the
index is added to its name). Images are upscaled with `--scale` (nearest) for viewing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .ask import DEFAULT_MODEL, MAX_PIXELS, read_image


def register(sub) -> None:
    p = sub.add_parser("draw", help="draw images from a text prompt (LLaDA-o or Uni)")
    p.add_argument("prompt", help="e.g. 'a handwritten digit 7'")
    p.add_argument("--image", default=None, help="an image to edit (condition image)")
    add_image_options(p, "drawings")
    e = sub.add_parser("edit", help="edit an image as an instruction says (LLaDA-o or Uni)")
    e.add_argument("prompt", metavar="instruction", help="e.g. 'Change the digit to 7.'")
    e.add_argument("--image", required=True, help="the image to edit")
    add_image_options(e, "edits")


def add_image_options(p, out: str) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="a LLaDA-o or LLaDA2.0-Uni model directory")
    p.add_argument("--out", default=out, help="a directory, or a .png file name")
    p.add_argument("-n", type=int, default=1, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None,
                   help="Euler steps (LLaDA-o: 30, t from 1 to 0, shift 3; Uni: 8 distilled decoder steps)")
    p.add_argument("--full-ode", action="store_true", help="Uni: the teacher decoder's full ODE with CFG")
    p.add_argument("--cfg", type=float, default=4.0, help="text CFG scale (1: off)")
    p.add_argument("--img-cfg", type=float, default=1.0, help="image CFG scale when editing")
    p.add_argument("--scale", type=int, default=4, help="upscale factor of the written PNGs")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS)
    p.set_defaults(func=run)


def output_paths(out: str, n: int, seed: int) -> list[Path]:
    path = Path(out)
    if path.suffix.lower() == ".png":
        if n == 1:
            return [path]
        return [path.with_name(f"{path.stem}_{i}.png") for i in range(n)]
    return [path / f"draw_{seed}_{i}.png" for i in range(n)]


def save_png(image: np.ndarray, path: Path, scale: int = 1) -> None:
    from PIL import Image

    pil = Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8), mode="L")
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)


def run(args) -> int:
    if not args.prompt.strip():
        raise ValueError("the prompt is empty")
    if args.n < 1 or (args.steps is not None and args.steps < 1):
        raise ValueError("-n and --steps must be at least 1")
    image = read_image(args.image, args.max_pixels) if args.image else None
    from ..train.uni import is_uni_dir

    if is_uni_dir(args.model):
        return run_uni(args, image)
    from ..sampling.image import draw_lladao
    from ..train.omni import load_omni

    model, tok = load_omni(args.model)
    if not model.can_draw:
        raise ValueError(f"the model at {args.model} has no generation expert: it cannot draw")
    images = draw_lladao(model, tok, [args.prompt], n=args.n, seed=args.seed, steps=args.steps or 30, cfg=args.cfg,
                  image=image, img_cfg=args.img_cfg, progress=True)
    write_all(images, args)
    return 0


def write_all(images, args) -> None:
    for img, path in zip(images, output_paths(args.out, args.n, args.seed)):
        save_png(img, path, args.scale)
        print(path)


def run_uni(args, image) -> int:
    """Uni: image codes by block diffusion with CFG, then the decoder; with --image, an edit."""
    from ..sampling.image import draw_uni, edit_uni
    from ..train.uni import load_uni_model

    model, tok = load_uni_model(args.model)
    kw = dict(n=args.n, seed=args.seed, cfg=args.cfg, distilled=not args.full_ode, decoder_steps=args.steps)
    images = edit_uni(model, tok, image, args.prompt, **kw) if image is not None else \
        draw_uni(model, tok, [args.prompt], **kw)
    write_all(images, args)
    return 0
