"""`omnidlm demo --system uni`: the LLaDA2.0-Uni digits model reads, draws and edits held-out digits.

Writes into --out: `drawings.png` (one column per digit, the 8-step distilled decoder), `edits.png`
(held-out digits, top row, and their edits into digit (d + 1) mod 10, bottom row), `demo.json`, and
prints the table of `omnidlm demo` plus the edit accuracy and the decoder's steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .demo import grid_png, load_or_train, score_rows, table

DEFAULT_UNI_MODEL = "models/uni-digits"


def edits_png(model, tok, out: Path, seed: int) -> None:
    """Ten held-out digits (top) and each changed into the next digit (bottom)."""
    from ..data.digits import digit_images
    from ..data.uni_batches import edit_instruction
    from ..sampling.image import edit_uni

    images, labels = digit_images("heldout", 32)
    pairs = []
    for d in range(10):
        i = int(np.flatnonzero(labels == d)[0])
        pairs += [images[i], edit_uni(model, tok, images[i], edit_instruction((d + 1) % 10), seed=seed)[0]]
    grid_png(np.stack(pairs), 2, out / "edits.png")


def run_uni(args) -> int:
    from ..eval import uni_digits as E

    from ..train.uni import digits_uni, load_uni_model, train_uni

    (model, tok), summary, model_dir = load_or_train(args, load_uni_model, train_uni, digits_uni,
                                                     "tokenizer, decoder, then the MoE backbone")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    limit, per_digit = (None, 10) if args.all else (args.questions, args.per_digit)
    q = E.question_accuracy(model, tok, limit, args.seed)
    d = E.drawing_accuracy(model, tok, per_digit, args.seed, decoder_steps=args.steps)
    e = E.edit_accuracy(model, tok, limit=20, seed=args.seed)
    grid_png(d["images"], per_digit, out / "drawings.png")
    edits_png(model, tok, out, args.seed)
    edit_row = ("judged edit accuracy", f"{e['accuracy']:.1%}  ({e['n']} held-out digits changed)")
    print(table(score_rows(model_dir, q, d, f"{d['decoder_steps']} decoder steps, distilled", [edit_row], summary)))
    print(f"wrote {out / 'drawings.png'}, {out / 'edits.png'}, {out / 'demo.json'}")
    record = {"system": "uni", "question": q, "drawing": {k: d[k] for k in ("accuracy", "n", "seconds_per_image",
                                                                          "decoder_steps")},
              "edit": e, "drawing_predicted": d["predicted"].tolist(), "training": summary}
    (out / "demo.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return 0
