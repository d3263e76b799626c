"""`omnidlm visualize --model PATH "prompt" --out unmask.gif`: the denoising trajectory as frames.

The all-masked start, then one frame per engine step: committed tokens in black, tokens committed
at this step in red, still masked positions as grey shade blocks (drawn with DejaVu Sans Mono,
which matplotlib ships and which has the glyph). Written with Pillow as a GIF (or a PNG of the
last frame).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from .args import device, int_in, positive_int, probability

MASK_GLYPH = "\u2591"  # light shade
FONT_FILE = "DejaVuSansMono.ttf"


def register(sub) -> None:
    p = sub.add_parser("visualize", help="write the unmasking trajectory of one answer as a GIF")
    p.add_argument("--model", required=True, help="checkpoint directory with a tokenizer.json")
    p.add_argument("prompt", help="the user message")
    p.add_argument("--out", default="unmask.gif", help="GIF (all frames) or PNG (last frame)")
    p.add_argument("--max-tokens", type=positive_int, default=128, help="upper bound of the answer (it stops at EOS)")
    p.add_argument("--threshold", type=probability, default=0.9, help="commit tokens at least this confident")
    p.add_argument("--width", type=int_in(8, 400), default=64, help="characters per line")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda[:N]")
    p.set_defaults(func=run)


def trajectory(engine, prompt_ids, max_tokens) -> list[list[int]]:
    """Canvas of generated positions (mask ids included) after every step of one request."""
    from ..sampling.engine import Request

    request_id = engine.add(Request(prompt_ids, max_tokens))
    frames = []
    while engine.busy:
        before = len(frames)
        finished = {r.id: r for r in engine.step()}
        if request_id in finished:
            frames.append(finished[request_id].tokens)
        elif engine.rows:
            row = engine.rows[0]
            frames.append(engine.tokens[0, row.prompt_len : row.end].tolist())
        assert len(frames) == before + 1
    return frames


def mono_font(size: int = 13):
    """DejaVu Sans Mono, which matplotlib ships: it has the mask glyph (Pillow's default font does
    not, and draws a missing-glyph box)."""
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONT_FILE), size)


def render(frames, tokenizer, mask_id, eos_id, width):
    """Pillow images: the all-masked start, then one per step; (text, colour) cells on a character
    grid and a caption "step k/n" (so no two frames are equal and GIF writers keep every one)."""
    from PIL import Image, ImageDraw

    font = mono_font()
    cell_w, cell_h = 8, 16
    lines = max(1, -(-max(len(f) for f in frames) // width))
    start = [mask_id] * len(frames[0])
    images, previous = [], None
    for step, frame in enumerate([start] + frames):
        image = Image.new("RGB", (width * cell_w + 16, lines * cell_h + 36), "white")
        draw = ImageDraw.Draw(image)
        for i, token in enumerate(frame):
            if token == eos_id:
                break
            new = previous is not None and (i >= len(previous) or previous[i] == mask_id) and token != mask_id
            glyph = MASK_GLYPH if token == mask_id else (tokenizer.decode([token]) or "?")[:1]
            colour = (170, 170, 170) if token == mask_id else ((200, 30, 30) if new else (0, 0, 0))
            draw.text((8 + (i % width) * cell_w, 8 + (i // width) * cell_h), glyph, fill=colour, font=font)
        caption = f"step {step}/{len(frames)}" if step else "start: every position masked"
        draw.text((8, 14 + lines * cell_h), caption, fill=(90, 90, 90), font=font)
        images.append(image)
        previous = frame
    return images


def run(args) -> int:
    from .. import systems
    from ..sampling.engine import BatchEngine, SamplingConfig
    from ..sampling.policies import Threshold

    if not args.prompt.strip():
        raise ValueError("the prompt is empty")
    loaded = systems.open(args.model, device=args.device)
    model, tokenizer = loaded.model, loaded.tokenizer
    cache = "exact" if model.config.attention == "block" else "approx"
    engine = BatchEngine(model, SamplingConfig(max_new_tokens=args.max_tokens, cache=cache,
                                               policy=Threshold(args.threshold, model.config.block_size)), max_batch=1)
    frames = trajectory(engine, tokenizer.encode_chat([{"role": "user", "content": args.prompt}]), args.max_tokens)
    images = render(frames, tokenizer, model.config.mask_id, model.config.eos_id, args.width)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        durations = [400] * (len(images) - 1) + [2000]  # hold the finished answer
        images[0].save(out, save_all=True, append_images=images[1:], duration=durations, loop=0)
    else:
        images[-1].save(out)
    answer = tokenizer.decode([t for t in frames[-1] if t != model.config.eos_id])
    print(f"{len(frames)} steps ({len(images)} frames) -> {out}\n" + "\n".join(textwrap.wrap(answer, args.width)))
    return 0
