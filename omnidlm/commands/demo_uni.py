"""`omnidlm demo --system uni`: the LLaDA2.0-Uni digits model reads, draws, edits and answers in images.

Writes into --out/uni/: `drawings.png` (one labelled column per digit, the 8-step distilled decoder),
`edits.png` (held-out digits, row "source", and their edits into digit (d + 1) mod 10, row "edit"),
`free_answers.png` (interleaved pairs and thinking answers, their images labelled with the digits
asked for), `demo.json`, and prints the table of `omnidlm demo` plus edits, interleaved pairs,
thinking-then-drawing and the decoder's steps.
"""

from __future__ import annotations


import numpy as np

from ..formats.io import write_json
from .demo import grid_png, load_or_train, score_rows, show_table, system_dir
from .args import shipped_model
from ..systems import SYSTEMS

DEFAULT_UNI_MODEL = shipped_model(SYSTEMS["uni"].shipped)


def edits_png(model, tok, out, seed: int) -> None:
    """Ten held-out digits (row "source") and each changed into the next digit (row "edit")."""
    from ..data.digits import digit_images
    from ..data.uni_batches import edit_instruction
    from ..sampling.image import edit_uni

    images, labels = digit_images("heldout", 32)
    pairs = []
    for d in range(10):
        i = int(np.flatnonzero(labels == d)[0])
        pairs += [images[i], edit_uni(model, tok, images[i], edit_instruction((d + 1) % 10), seed=seed)[0]]
    grid_png(np.stack(pairs), 2, out / "edits.png", columns=[f"{d}->{(d + 1) % 10}" for d in range(10)],
             rows=["source", "edit"])


def free_answers_png(pairs: dict, thinking: dict, out, limit: int = 10) -> None:
    """Interleaved answers for the pairs (A, A + 3 mod 10) (two images each, labelled "A,B" asked) and
    the thinking answers (one image, labelled "D+1"); a missing image is left black."""
    cells, labels = [], []
    shown = [r for r in pairs["rows"] if r["want"][1] == (r["want"][0] + 3) % 10] or pairs["rows"]
    for row in shown[:limit]:
        images = list(row["images"][:2]) + [np.zeros((32, 32), np.float32)] * (2 - len(row["images"][:2]))
        cells += images
        labels.append(f"{row['want'][0]},{row['want'][1]}")
    grid_png(np.stack(cells), 2, out / "free_answers.png", columns=labels, rows=["first", "second"])
    cells = [(row["images"] or [np.zeros((32, 32), np.float32)])[-1] for row in thinking["rows"][:9]]
    grid_png(np.stack(cells), 1, out / "thinking.png", columns=[f"{row['before']}+1" for row in thinking["rows"][:9]])


def free_rows(pairs: dict, thinking: dict) -> list[tuple[str, str]]:
    return [("interleaved pairs", f"{pairs['accuracy']:.1%}  ({pairs['n']} 'Draw the digits A and B.': named "
                                  f"{pairs['named']:.0%}, drawn {pairs['drawn']:.0%}; floor 80%)"),
            ("thinking, then drawing", f"{thinking['accuracy']:.1%}  ({thinking['n']} 'Draw the digit after D.': "
                                       f"reasoned {thinking['reasoned']:.0%}, drawn {thinking['drawn']:.0%}; floor 80%)")]


def run_uni(args) -> int:
    from ..eval import uni_digits as E
    from ..eval.omni_digits import sample_diversity
    from ..train.uni import digits_uni, train_uni

    (model, tok), summary, model_dir = load_or_train(args, train_uni, digits_uni,
                                                     "tokenizer, decoder, then the MoE backbone")
    out = system_dir(args)
    limit, per_digit = (None, 10) if args.all else (args.questions, args.per_digit)
    q = E.question_accuracy(model, tok, limit, args.seed)
    d = E.drawing_accuracy(model, tok, per_digit, args.seed, decoder_steps=args.steps)
    d["diversity"] = sample_diversity(d["images"], d["labels"])
    e = E.edit_accuracy(model, tok, limit=20, seed=args.seed)
    pairs = E.interleaved_accuracy(model, tok, limit, args.seed, keep_images=True)  # default: all 100 pairs
    thinking = E.thinking_accuracy(model, tok, keep_images=True)  # D = 0..8
    grid_png(d["images"], per_digit, out / "drawings.png")
    edits_png(model, tok, out, args.seed)
    free_answers_png(pairs, thinking, out)
    edit_row = ("judged edit accuracy", f"{e['accuracy']:.1%}  ({e['n']} held-out digits changed)")
    rows = score_rows(model_dir, q, d, f"{d['decoder_steps']} decoder steps, distilled",
                      [edit_row, *free_rows(pairs, thinking)], summary)
    show_table(rows, out)
    names = ("drawings.png", "edits.png", "free_answers.png", "thinking.png", "table.png", "demo.json")
    print("wrote " + ", ".join(str(out / n) for n in names))
    strip = {"rows", "images"}

    def brief(result):
        return {k: v for k, v in result.items() if k != "rows"} | \
            {"rows": [{k: v for k, v in r.items() if k not in strip} for r in result["rows"]]}

    record = {"system": "uni", "question": q,
              "drawing": {k: d[k] for k in ("accuracy", "n", "seconds_per_image", "decoder_steps", "diversity")},
              "edit": e, "interleaved": brief(pairs), "thinking": brief(thinking),
              "drawing_predicted": d["predicted"].tolist(), "training": summary}
    write_json(out / "demo.json", record)
    return 0
