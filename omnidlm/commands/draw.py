"""`omnidlm draw`: draw images from a text prompt with a LLaDA-o or LLaDA2.0-Uni model (or edit an image).

    omnidlm draw --model models/lladao-digits "a handwritten digit 7" --out drawings/ -n 4 --seed 0
    omnidlm draw "a handwritten digit 7" --out seven.png                 # one file (any format PIL writes)
    omnidlm draw "..." --image in.png --img-cfg 1.5 --out edited.png      # editing with image CFG
    omnidlm draw --model models/uni-digits "a handwritten digit 7" -n 4    # Uni: codes, then the decoder
    omnidlm edit --model models/uni-digits --image in.png "Change the digit to 7." --out out.png

LLaDA-o takes the published inferencer's knobs by their published meaning (docs/architecture.md,
"Drawing"); with `--prompt-ids` the prompt is token ids drawn in the published layout:

    omnidlm draw --model DIR --prompt-ids 132,394,8 --height 16 --width 24 --num-timesteps 4 \\
        --cfg-scale 4 --cfg-interval 0.4 1.0 --timestep-shift 3 --cfg-renorm-min 0 \\
        --cfg-renorm-type global --init-noise noise.npy --save-latent z.npy --out image.png

`--init-noise` / `--save-latent` are .npy arrays (C, H/f, W/f) float32 (f: the VAE's downsampling).
`--out` is a directory (files `draw_<seed>_<i>.png`) or, for -n 1, a file path whose suffix names
its format (for -n > 1 the index is added to its name). Images are upscaled with `--scale` (nearest).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .ask import DEFAULT_MODEL, MAX_PIXELS, read_image
from .args import finite_float, int_in, positive_float, positive_int, probability, seed

LLADAO_ONLY = ("prompt_ids", "height", "width", "num_timesteps", "cfg_interval", "timestep_shift",
               "cfg_renorm_min", "cfg_renorm_type", "init_noise", "save_latent")


def register(sub) -> None:
    p = sub.add_parser("draw", help="draw images from a text prompt (LLaDA-o or Uni)")
    p.add_argument("prompt", nargs="?", default=None, help="e.g. 'a handwritten digit 7'")
    p.add_argument("--image", default=None, help="an image to edit (condition image)")
    add_image_options(p, "drawings")
    e = sub.add_parser("edit", help="edit an image as an instruction says (LLaDA-o or Uni)")
    e.add_argument("prompt", metavar="instruction", help="e.g. 'Change the digit to 7.'")
    e.add_argument("--image", required=True, help="the image to edit")
    add_image_options(e, "edits")


def add_image_options(p, out: str) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="a LLaDA-o or LLaDA2.0-Uni model directory")
    p.add_argument("--out", default=out, help="a directory, or a file name (.png, .jpg, ...)")
    p.add_argument("-n", type=positive_int, default=1, help="number of images")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--steps", type=positive_int, default=None,
                   help="Euler steps (LLaDA-o: 30, i.e. --num-timesteps 31; Uni: 8 distilled decoder steps)")
    p.add_argument("--full-ode", action="store_true", help="Uni: the teacher decoder's full ODE with CFG")
    p.add_argument("--cfg-scale", "--cfg", dest="cfg", type=finite_float, default=4.0, help="text CFG scale (<= 1: off)")
    p.add_argument("--img-cfg", "--cfg-img-scale", dest="img_cfg", type=finite_float, default=1.0,
                   help="image CFG scale when editing (LLaDA-o: acts only with text CFG, as published)")
    p.add_argument("--scale", type=int_in(1, 64), default=4, help="upscale factor of the written images")
    p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS)
    o = p.add_argument_group("LLaDA-o (the published inferencer's knobs)")
    o.add_argument("--prompt-ids", default=None, help="comma-separated prompt token ids (instead of a prompt)")
    o.add_argument("--height", type=positive_int, default=None, help="image height in pixels (default: the VAE's size)")
    o.add_argument("--width", type=positive_int, default=None, help="image width in pixels (default: the height)")
    o.add_argument("--num-timesteps", type=positive_int, default=None, help="grid points t = 1 -> 0 (Euler steps + 1)")
    o.add_argument("--cfg-interval", type=probability, nargs=2, metavar=("LO", "HI"), default=None,
                   help="CFG acts for t in (LO, HI] (default 0.4 1.0)")
    o.add_argument("--timestep-shift", type=positive_float, default=None, help="grid shift (default 3.0)")
    o.add_argument("--cfg-renorm-min", type=finite_float, default=None, help="lower clamp of the CFG re-scaling (default 0)")
    o.add_argument("--cfg-renorm-type", choices=("global", "channel", "text_channel"), default=None,
                   help="CFG re-scaling: per image, per latent token, or per token on the text CFG only")
    o.add_argument("--init-noise", default=None, help="starting noise, .npy (C, H/f, W/f) float32")
    o.add_argument("--save-latent", default=None, help="write the final latent, .npy (C, H/f, W/f) float32")
    p.set_defaults(func=run)


# --- output files -------------------------------------------------------------------------------------


def _writable_suffix(path: Path) -> None:
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"--out {path}: cannot write images of type {path.suffix!r} (use .png, .jpg, ...)")


def output_paths(out: str, n: int, seed: int) -> list[Path]:
    """A path with a suffix is a file (its suffix names the format); otherwise a directory."""
    path = Path(out)
    if not path.suffix:
        return [path / f"draw_{seed}_{i}.png" for i in range(n)]
    _writable_suffix(path)
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(n)]


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: nothing half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}"))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_png(image: np.ndarray, path: Path, scale: int = 1) -> None:
    """(H, W) grayscale in [0, 1] or (H, W, 3) uint8 -> the file `path` (PNG, or the format its
    suffix names), upscaled `scale` times (nearest)."""
    from PIL import Image

    if image.dtype == np.uint8:
        pil = Image.fromarray(image)
    else:
        pil = Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8), mode="L")
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    _atomic(Path(path), lambda tmp: pil.save(tmp, format=fmt))


def write_all(images, args) -> None:
    for img, path in zip(images, output_paths(args.out, args.n, args.seed)):
        save_png(img, path, args.scale)
        print(path)


# --- LLaDA-o --------------------------------------------------------------------------------------------


def parse_ids(text: str, flag: str = "--prompt-ids") -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", ",").split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise ValueError(f"{flag} is empty")
    return ids


def flow_settings(args):
    """The LLaDA-o knobs of the command line -> FlowSettings (published defaults where not given)."""
    from ..sampling.image import FlowSettings

    if args.steps is not None and args.num_timesteps is not None:
        raise ValueError("give --steps (Euler steps) or --num-timesteps (grid points), not both")
    given = {k: v for k, v in dict(timestep_shift=args.timestep_shift, cfg_renorm_min=args.cfg_renorm_min,
                                   cfg_renorm_type=args.cfg_renorm_type).items() if v is not None}
    if args.cfg_interval is not None:
        given["cfg_interval"] = tuple(args.cfg_interval)
    steps = args.num_timesteps if args.num_timesteps is not None else (args.steps or 30) + 1
    return FlowSettings(num_timesteps=steps, cfg_text_scale=args.cfg, cfg_img_scale=args.img_cfg, **given)


def read_noise(path: str):
    import torch

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"--init-noise {path}: not a readable .npy array ({error})") from None
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise ValueError(f"--init-noise {path}: must hold finite floats, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def save_latent(z, path: str) -> None:
    """The final latent(s) as float32 .npy: (C, H/f, W/f) for one image, (n, C, H/f, W/f) for more."""
    array = z.detach().float().cpu().numpy()
    array = array[0] if array.shape[0] == 1 else array
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)

    _atomic(Path(path), write)
    print(path)


def run_lladao(args, image, loaded) -> int:
    from ..formats.core import resolve
    from ..formats.lladao import image_marker_ids
    from ..models.latents import decode_latents
    from ..sampling import image as I
    settings = flow_settings(args)
    model, tok = loaded.model, loaded.tokenizer
    if not model.can_draw:
        raise ValueError(f"the model at {args.model} has no generation expert: it cannot draw")
    if args.prompt_ids is not None:
        if image is not None or args.n != 1:
            raise ValueError("--prompt-ids draws one image from token ids: no --image, -n 1")
        noise = read_noise(args.init_noise) if args.init_noise else None
        z = I.draw_lladao_ids(model, parse_ids(args.prompt_ids), args.height, args.width, settings, noise,
                              args.seed, image_marker_ids(resolve(args.model)), progress=True)[None]
        images = I.to_uint8(decode_latents(model.vae, z))  # (1, H, W, 3), as the published decode_image
    else:
        if args.init_noise or args.height or args.width:
            raise ValueError("--init-noise, --height and --width go with --prompt-ids")
        images, z = I.draw_lladao(model, tok, [args.prompt], n=args.n, seed=args.seed, settings=settings,
                                  image=image, progress=True, return_latents=True)
    paths = output_paths(args.out, args.n, args.seed)  # checked before anything is written
    if args.save_latent:
        save_latent(z, args.save_latent)
    for img, path in zip(images, paths):
        save_png(img, path, args.scale)
        print(path)
    return 0


# --- the command ----------------------------------------------------------------------------------------


def run(args) -> int:
    if (args.prompt is None) == (getattr(args, "prompt_ids", None) is None):
        raise ValueError("give a prompt or --prompt-ids (one of them)")
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError("the prompt is empty")
    if args.n < 1 or (args.steps is not None and args.steps < 1):
        raise ValueError("-n and --steps must be at least 1")
    output_paths(args.out, args.n, args.seed)  # a bad --out fails before the model loads
    image = read_image(args.image, args.max_pixels) if args.image else None
    from .. import systems

    loaded = systems.open(args.model)
    if "draw" not in loaded.system.capabilities:
        raise ValueError(f"the model at {args.model} is a {loaded.system.title} model: it cannot draw")
    return DRAWERS[loaded.system.name](args, image, loaded)


def run_uni(args, image, loaded) -> int:
    """Uni: image codes by block diffusion with CFG, then the decoder; with --image, an edit."""
    from ..sampling.image import draw_uni, edit_uni
    given = [f"--{k.replace('_', '-')}" for k in LLADAO_ONLY if getattr(args, k, None) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: LLaDA-o options; a Uni model draws from a text prompt")
    model, tok = loaded.model, loaded.tokenizer
    kw = dict(n=args.n, seed=args.seed, cfg=args.cfg, distilled=not args.full_ode, decoder_steps=args.steps)
    images = edit_uni(model, tok, image, args.prompt, **kw) if image is not None else \
        draw_uni(model, tok, [args.prompt], **kw)
    write_all(images, args)
    return 0


DRAWERS = {"uni": run_uni, "lladao": run_lladao}  # per system that draws: its sampler's flags
