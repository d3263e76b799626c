"""`omnidlm demo`: the omni model in one command: it reads held-out digits and draws them.

    omnidlm demo                          # load models/lladao-digits, ~1 minute on a laptop CPU
    omnidlm demo --all                    # 10 drawings per digit (every held-out digit is asked by default)
    omnidlm demo --train                  # retrain the model first (recipe digits-lladao, <= 15 min)
    omnidlm demo --system uni             # the same digits with LLaDA2.0-Uni (models/uni-digits)
    omnidlm demo --model runs/uni         # the demo of the model's system (the registry finds it)

Writes into --out/<system>/ (default demo_out/lladao/): `drawings.png` (a grid, one labelled
column per digit), `unmasking.gif` and `unmasking.png` (one answer unmasked one token per
iteration), `demo.json` (all the numbers and answers), and prints a table: held-out question
accuracy, drawing accuracy judged by an SVC trained on the real digits, sample diversity (drawings
of one digit against real ones), answer-length error, seconds per answer and per image.
With `--system uni` (demo_out/uni/) it also edits held-out digits (`edits.png`), answers interleaved
and thinking prompts (`free_answers.png`) and reports the decoder's steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..formats.io import write_json
from .args import finite_float, positive_int, probability, seed, shipped_model


def _run_uni(args, system) -> int:
    from .demo_uni import run_uni

    return run_uni(args)


def _systems_help() -> str:
    from .. import systems

    return "; ".join(f"{n}: {systems.SYSTEMS[n].title} (models/{systems.SYSTEMS[n].shipped})" for n in DEMOS)


def register(sub) -> None:
    p = sub.add_parser("demo", help="the digits demo (LLaDA-o or Uni): answer questions about digits, draw digits")
    p.add_argument("--system", choices=tuple(DEMOS), default=None,
                   help=f"{_systems_help()} (default: the system of --model, else lladao)")
    p.add_argument("--model", default=None, help="a digits model directory (default: the system's shipped one)")
    p.add_argument("--train", action="store_true",
                   help="retrain the model (recipe digits-lladao or digits-uni) into --out/<system>/model")
    p.add_argument("--out", default="demo_out", help="output directory (each system writes into --out/<system>/)")
    p.add_argument("--questions", type=positive_int, default=None,
                   help="held-out digits asked (default: all 297; else a random subset, fixed seed); "
                        "uni: also the interleaved pairs asked (default: all 100)")
    p.add_argument("--per-digit", type=positive_int, default=3, help="drawings per digit")
    p.add_argument("--all", action="store_true", help="every held-out digit and 10 drawings per digit")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="Euler steps per drawing (default: lladao 30; uni 8, the distilled decoder)")
    p.add_argument("--cfg", type=finite_float, default=None, help="lladao: text CFG scale of the drawings "
                   "(default: the system's, 4)")
    p.add_argument("--threshold", type=probability, default=None, help="lladao: confidence threshold of the "
                   "answers (default: the system's, 0.95)")
    p.add_argument("--seed", type=seed, default=0)
    p.set_defaults(func=run)


def grid_png(images: np.ndarray, per_digit: int, path: Path, scale: int = 4, columns=None, rows=None) -> None:
    """(10 * per_digit, H, W), column-major (digit-major) -> one column per digit, one row per sample,
    with a label above each column (`columns`, default the digits) and, given `rows`, left of each row."""
    from PIL import Image, ImageDraw

    H, W = images.shape[1:]
    n_cols = len(images) // per_digit
    canvas = np.zeros((per_digit * (H + 2), n_cols * (W + 2)), dtype=np.float32)
    for i, img in enumerate(images):
        d, r = divmod(i, per_digit)
        canvas[r * (H + 2) + 1: r * (H + 2) + 1 + H, d * (W + 2) + 1: d * (W + 2) + 1 + W] = img
    cells = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8), mode="L")
    cells = cells.resize((cells.width * scale, cells.height * scale), Image.NEAREST)
    top, left = 16, (56 if rows else 0)
    sheet = Image.new("L", (cells.width + left, cells.height + top), 0)
    sheet.paste(cells, (left, top))
    draw, cw, ch = ImageDraw.Draw(sheet), (W + 2) * scale, (H + 2) * scale
    for c, label in enumerate(columns if columns is not None else [str(d) for d in range(n_cols)]):
        draw.text((left + c * cw + cw // 2 - 3 * len(label), 2), label, fill=255)
    for r, label in enumerate(rows or []):
        draw.text((4, top + r * ch + ch // 2 - 5), label, fill=255)
    sheet.save(path)


def unmasking_frames(image: np.ndarray, question: str, history: list[list[int]], tokenizer, mask_id: int,
                     eos_id: int, width: int = 40):
    """One PIL frame per iteration: the digit, the question, the answer with masks shown as '_'."""
    from PIL import Image, ImageDraw

    digit = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").resize((96, 96), Image.NEAREST)
    frames = []
    # the start state (every answer position masked) first: a confident model may settle the whole
    # answer in one iteration, and the animation should still show masks turning into text
    start = [[mask_id] * len(history[0])] if history else []
    for step, ids in enumerate(start + history, start=-len(start)):
        shown = "".join("_" if t == mask_id else ("." if t == eos_id else tokenizer.decode([t])) for t in ids)
        frame = Image.new("L", (420, 112), 0)
        frame.paste(digit, (8, 8))
        draw = ImageDraw.Draw(frame)
        draw.text((112, 10), f"Q: {question}", fill=255)
        lines = [shown[i: i + width] for i in range(0, len(shown), width)] or [""]
        for k, line in enumerate(lines[:5]):
            draw.text((112, 30 + 14 * k), ("A: " if k == 0 else "   ") + line, fill=255)
        note = f"iteration {step + 1}/{len(history)}, most confident first" if step >= 0 else "start: all masked"
        draw.text((112, 98), note, fill=160)
        frames.append(frame)
    return frames


def write_unmasking(frames, out: Path) -> None:
    from PIL import Image

    frames[0].save(out / "unmasking.gif", save_all=True, append_images=frames[1:] + [frames[-1]] * 3,
                   duration=400, loop=0)
    strip = Image.new("L", (frames[0].width, frames[0].height * len(frames)))
    for i, f in enumerate(frames):
        strip.paste(f, (0, i * f.height))
    strip.save(out / "unmasking.png")


def load_or_train(args, train, recipe, parts: str):
    """--model, or a fresh run of `recipe` (training `parts`) into --out/<system>/model -> ((model, tokenizer), summary, dir)."""
    from .. import systems

    def load(path):
        loaded = systems.open(path)
        return loaded.model, loaded.tokenizer

    if not args.train:
        if not Path(args.model).exists():
            raise FileNotFoundError(f"no model at {args.model}; run `omnidlm demo --system {args.system} --train` "
                                    "to train one")
        return load(args.model), None, str(args.model)
    cfg, target = recipe(), Path(args.out) / args.system / "model"
    print(f"training recipe {cfg.recipe} into {target} ({parts}) ...")
    _, summary = train(cfg, target, progress=True, force=True)
    return load(target), summary, str(target)


def score_rows(model_dir: str, q: dict, d: dict, image_note: str, extra=(), summary: dict | None = None) -> list:
    """The demo table: model, held-out question and judged drawing accuracy, `extra` rows, answer
    length error, seconds per answer and per image (with `image_note`), training time if trained."""
    rows = [("model", model_dir),
            ("held-out question accuracy", f"{q['accuracy']:.1%}  ({q['n']} digits of 1500-1796)"),
            ("judged drawing accuracy", f"{d['accuracy']:.1%}  ({d['n']} drawings, SVC judge)"),
            ("sample diversity", diversity_note(d["diversity"])),
            *extra,
            ("answer-length error", f"{q['length_error']:.2f} tokens (mean |predicted - true|)"),
            ("seconds per answer", f"{q['seconds_per_answer']:.3f}"),
            ("seconds per image", f"{d['seconds_per_image']:.3f}  ({image_note})")]
    return rows + ([("training time", f"{summary['seconds']:.0f} s")] if summary else [])


def diversity_note(div: dict | None) -> str:
    if div is None:
        return "n/a (needs 2 or more drawings per digit)"
    return (f"{div['drawn']:.3f} drawn vs {div['real']:.3f} real digits ({div['ratio']:.2f}x; mean pairwise "
            "RMS pixel distance within a digit)")


def system_dir(args) -> Path:
    """Each system writes into its own folder, --out/<system>/, so runs of both never mix files."""
    out = Path(args.out) / args.system
    out.mkdir(parents=True, exist_ok=True)
    return out


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 22)
    return "\n".join([line, *(f"{k:<{width}}  {v}" for k, v in rows), line])


def show_table(rows: list[tuple[str, str]], out: Path) -> None:
    """Print the demo's table and write it as `table.png` beside the grids."""
    from ..eval.plots import table_png

    print(table(rows))
    table_png([{"metric": k, "value": v} for k, v in rows], out / "table.png")


def demo_system(args):
    """The system whose demo runs: the one the registry finds at --model (which --system, when given,
    must name), else --system's (default lladao) with its shipped model."""
    from .. import systems

    if args.model is None or not Path(args.model).exists():  # no model yet: --system's (load_or_train says so)
        system = systems.SYSTEMS[args.system or "lladao"]
        args.model = args.model or shipped_model(system.shipped)
        return system
    system = systems.find(args.model)
    if system.name not in DEMOS:
        demos = ", ".join(systems.SYSTEMS[n].title for n in DEMOS)
        raise ValueError(f"--model {args.model}: a {system.title} model has no digits demo (demos: {demos})")
    if args.system not in (None, system.name):
        raise ValueError(f"--model {args.model} is a {system.title} model, not --system {args.system}'s "
                         f"{systems.SYSTEMS[args.system].title}")
    return system


def run(args) -> int:
    import torch

    torch.set_num_threads(1)  # small matrices: a second thread only adds contention
    system = demo_system(args)
    args.system = system.name  # the output folder, --out/<system>/
    return DEMOS[system.name](args, system)


def run_lladao(args, system) -> int:
    from ..data.digits import QUESTION, digit_images
    from ..eval.omni_digits import drawing_accuracy, question_accuracy, sample_diversity
    from ..sampling.omni import understand
    from ..train.omni import digits_lladao, train_omni

    (model, tok), summary, model_dir = load_or_train(args, train_omni, digits_lladao,
                                                     "VAE, then the omni model")
    args.steps = args.steps or system.sampling["draw_steps"]
    args.cfg = args.cfg if args.cfg is not None else system.sampling["cfg"]
    args.threshold = args.threshold if args.threshold is not None else system.threshold()
    out = system_dir(args)
    limit, per_digit = (None, 10) if args.all else (args.questions, args.per_digit)
    from tqdm.auto import tqdm

    bar = tqdm(total=limit or 297, desc="questions", leave=False)
    q = question_accuracy(model, tok, limit, args.seed, args.threshold, progress=lambda n: bar.update(1))
    bar.close()
    d = drawing_accuracy(model, tok, per_digit, args.seed, args.steps, args.cfg, progress=True)
    d["diversity"] = sample_diversity(d["images"], d["labels"])
    grid_png(d["images"], per_digit, out / "drawings.png")
    images, labels = digit_images("heldout", 32)
    # the animation commits one token per iteration (threshold 1.0 never fires): at 0.95 the model
    # settles a one-word answer in a single iteration and there would be no steps to show
    example = understand(model, tok, images[0], QUESTION, threshold=1.0, record=True)
    cfg = model.config.llm
    frames = unmasking_frames(images[0], QUESTION, example.history, tok, cfg.mask_id, cfg.eos_id)
    write_unmasking(frames, out)
    show_table(score_rows(model_dir, q, d, f"{args.steps} Euler steps, cfg {args.cfg}", summary=summary), out)
    print(f"example: image {1500} -> {example.text!r}, unmasked one token per iteration ({len(frames)} frames)")
    names = ("drawings.png", "unmasking.gif", "unmasking.png", "table.png", "demo.json")
    print("wrote " + ", ".join(str(out / n) for n in names))
    record = {"system": "lladao", "question": {k: v for k, v in q.items()},
              "drawing": {k: d[k] for k in ("accuracy", "n", "seconds_per_image", "diversity")},
              "drawing_predicted": d["predicted"].tolist(), "training": summary}
    write_json(out / "demo.json", record)
    return 0


# the digits demo of each system that has one (what it shows differs: LLaDA-o unmasks an answer, Uni
# also edits, interleaves and thinks); the system comes from the registry, this only names its demo
DEMOS = {"lladao": run_lladao, "uni": _run_uni}
