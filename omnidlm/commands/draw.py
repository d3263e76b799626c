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

Each system's drawing sampler takes the options its spec names (`System.draw_options`, one table of
flags here, `OPTIONS`); an option of another system is refused, naming who takes it.
`--init-noise` / `--save-latent` are .npy arrays (C, H/f, W/f) float32 (f: the VAE's downsampling).
`--out` is a directory (files `draw_<seed>_<i>.png`) or, for -n 1, a file path whose suffix names
its format (for -n > 1 the index is added to its name). Images are upscaled with `--scale` (nearest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..formats.io import atomic_file
from .ask import DEFAULT_MODEL, MAX_PIXELS, read_image
from .args import finite_float, int_in, positive_float, positive_int, probability, seed, token_ids

# every drawing option of every system, by its dest: (flags, argparse keywords). A system's spec names
# the ones its sampler takes (`System.draw_options`); the others are refused for its models.
OPTIONS = {
    "steps": (("--steps",), dict(type=positive_int, default=None,
              help="Euler steps (LLaDA-o: 30, i.e. --num-timesteps 31; Uni: 8 distilled decoder steps)")),
    "full_ode": (("--full-ode",), dict(action="store_true", default=None,
                 help="the teacher decoder's full ODE with CFG")),
    "cfg": (("--cfg-scale", "--cfg"), dict(type=finite_float, default=None,
            help="text CFG scale (<= 1: off; default: the system's: LLaDA-o 4, Uni 3)")),
    "img_cfg": (("--img-cfg", "--cfg-img-scale"), dict(type=finite_float, default=None,
                help="image CFG scale when editing (acts only with text CFG, as published; default 1: off)")),
    "prompt_ids": (("--prompt-ids",), dict(type=token_ids, default=None,
                   help="comma-separated prompt token ids (instead of a prompt)")),
    "height": (("--height",), dict(type=positive_int, default=None, help="image height in pixels (default: the VAE's size)")),
    "width": (("--width",), dict(type=positive_int, default=None, help="image width in pixels (default: the height)")),
    "num_timesteps": (("--num-timesteps",), dict(type=positive_int, default=None,
                      help="grid points t = 1 -> 0 (Euler steps + 1)")),
    "cfg_interval": (("--cfg-interval",), dict(type=probability, nargs=2, metavar=("LO", "HI"), default=None,
                     help="CFG acts for t in (LO, HI] (default 0.4 1.0)")),
    "timestep_shift": (("--timestep-shift",), dict(type=positive_float, default=None, help="grid shift (default 3.0)")),
    "cfg_renorm_min": (("--cfg-renorm-min",), dict(type=finite_float, default=None,
                       help="lower clamp of the CFG re-scaling (default 0)")),
    "cfg_renorm_type": (("--cfg-renorm-type",), dict(choices=("global", "channel", "text_channel"), default=None,
                        help="CFG re-scaling: per image, per latent token, or per token on the text CFG only")),
    "init_noise": (("--init-noise",), dict(default=None, help="starting noise, .npy (C, H/f, W/f) float32")),
    "save_latent": (("--save-latent",), dict(default=None, help="write the final latent, .npy (C, H/f, W/f) float32")),
}


def takers(option: str) -> tuple:
    """The systems whose drawing sampler takes `option`."""
    from .. import systems

    return tuple(s for s in systems.SYSTEMS.values() if option in s.draw_options)


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
    p.add_argument("--scale", type=int_in(1, 64), default=4, help="upscale factor of the written images")
    p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS)
    groups = {}  # the options every drawing system takes on the parser itself; the others grouped by who takes them
    every = {s.name for s in _drawing_systems()}
    for dest, (flags, kw) in OPTIONS.items():
        who = takers(dest)
        if {s.name for s in who} == every:
            p.add_argument(*flags, dest=dest, **kw)
            continue
        title = " and ".join(s.title for s in who) + " only"
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        groups[title].add_argument(*flags, dest=dest, **kw)
    p.set_defaults(func=run)


def _drawing_systems() -> list:
    from .. import systems

    return [s for s in systems.SYSTEMS.values() if s.draw is not None]


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
    atomic_file(path, lambda tmp: pil.save(tmp, format=fmt))


# --- LLaDA-o --------------------------------------------------------------------------------------------


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

    atomic_file(path, write)
    print(path)


# --- the command ----------------------------------------------------------------------------------------


def drawing_of(args, image):
    """The parsed flags -> the system-neutral `Drawing`: the options given (files read)."""
    from ..systems.tasks import Drawing

    options = {k: getattr(args, k) for k in OPTIONS if getattr(args, k, None) is not None}
    if "init_noise" in options:
        options["init_noise"] = read_noise(options["init_noise"])
    return Drawing(args.prompt, image, args.n, args.seed, options)


def refuse_options(system, given) -> None:
    """Options the system's drawing sampler does not take are an error naming them and who takes them."""
    foreign = [k for k in given if k not in system.draw_options]
    if foreign:
        flags = ", ".join(OPTIONS[k][0][0] for k in foreign)
        owners = " and ".join(dict.fromkeys(s.title for k in foreign for s in takers(k)))
        takes = ", ".join(OPTIONS[k][0][0] for k in system.draw_options)
        raise ValueError(f"{flags}: {owners} options; a {system.title} model draws from a text prompt "
                         f"and takes {takes}")


def run(args) -> int:
    if (args.prompt is None) == (getattr(args, "prompt_ids", None) is None):
        raise ValueError("give a prompt or --prompt-ids (one of them)")
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError("the prompt is empty")
    paths = output_paths(args.out, args.n, args.seed)  # a bad --out fails before the model loads
    image = read_image(args.image, args.max_pixels, mode=None) if args.image else None
    from .. import systems

    system = systems.find(args.model)
    system.refuse("edit" if image is not None else "draw", f"the model at {args.model}")
    refuse_options(system, [k for k in OPTIONS if getattr(args, k, None) is not None])
    drawn = system.draw(systems.open(args.model), drawing_of(args, image))
    if args.save_latent:
        save_latent(drawn.latents, args.save_latent)
    for img, path in zip(drawn.images, paths):
        save_png(img, path, args.scale)
        print(path)
    return 0
