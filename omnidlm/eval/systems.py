"""LLaDA-o against LLaDA2.0-Uni on the same held-out digits (`omnidlm bench --systems lladao,uni`).

One row per system and capability measured on held-out digits: question accuracy, judged drawing
accuracy and sample diversity (drawn vs real digits, `omni_digits.sample_diversity`), judged edits,
interleaved pairs ("Draw the digits A and B.": both named and drawn right) and thinking-then-drawing
(Uni; "n/a" where a system lacks the capability), seconds per answer and per image, the image
decoder's steps, and each system's own speed claim on long answers with its accuracy change:
LLaDA-o's cached block-threshold answers against the same model run LLaDA-V style (full recompute,
fixed steps: `omni_digits.recompute_comparison`; `recompute_speedup`, `recompute_accuracy_change`),
and Uni with and without SPRINT (`uni_digits.sprint_comparison`; `sprint_speedup`,
`sprint_accuracy_change`). A claim a system does not make is None ("n/a").
"""

from __future__ import annotations


def lladao_row(path: str, n: int, per_digit: int) -> dict:
    from .. import systems
    from . import omni_digits as E

    loaded = systems.open(path)
    model, tok = loaded.model, loaded.tokenizer
    q = E.question_accuracy(model, tok, n)
    d = E.drawing_accuracy(model, tok, per_digit)
    r = E.recompute_comparison(model, tok, limit=n)
    return {"system": "lladao", "model": path, "question_accuracy": q["accuracy"], "drawing_accuracy": d["accuracy"],
            "diversity": E.sample_diversity(d["images"], d["labels"]), "edit_accuracy": None,
            "interleaved_accuracy": None, "thinking_accuracy": None,
            "seconds_per_answer": q["seconds_per_answer"], "seconds_per_image": d["seconds_per_image"],
            "decoder_steps": "30 (flow ODE, CFG)", "recompute_speedup": r["speedup"],
            "recompute_accuracy_change": r["accuracy_change"], "recompute": r,
            "sprint_speedup": None, "sprint_accuracy_change": None}


def uni_row(path: str, n: int, per_digit: int) -> dict:
    from .. import systems
    from . import uni_digits as E
    from .omni_digits import sample_diversity

    loaded = systems.open(path)
    model, tok = loaded.model, loaded.tokenizer
    q = E.question_accuracy(model, tok, n)
    d = E.drawing_accuracy(model, tok, per_digit)
    e = E.edit_accuracy(model, tok, limit=min(n, 40))
    pairs, thinking = E.interleaved_accuracy(model, tok, min(n, 100)), E.thinking_accuracy(model, tok)  # D = 0..8
    s = E.sprint_comparison(model, tok, limit=n)
    return {"system": "uni", "model": path, "question_accuracy": q["accuracy"], "drawing_accuracy": d["accuracy"],
            "diversity": sample_diversity(d["images"], d["labels"]), "edit_accuracy": e["accuracy"],
            "interleaved_accuracy": pairs["accuracy"], "thinking_accuracy": thinking["accuracy"],
            "interleaved": {k: v for k, v in pairs.items() if k != "rows"},
            "thinking": {k: v for k, v in thinking.items() if k != "rows"},
            "seconds_per_answer": q["seconds_per_answer"], "seconds_per_image": d["seconds_per_image"],
            "decoder_steps": "8 (distilled, no CFG)", "recompute_speedup": None, "recompute_accuracy_change": None,
            "sprint_speedup": s["speedup"],
            "sprint_accuracy_change": s["accuracy_with"] - s["accuracy_without"], "sprint": s}


ROWS = {"lladao": lladao_row, "uni": uni_row}  # system name -> its row (path, n, per_digit) -> dict
SYSTEMS = tuple(ROWS)


def compare_systems(names: list[str], models: dict, n: int = 100, per_digit: int = 5, progress=None) -> list[dict]:
    rows = []
    for name in names:
        if progress:
            progress(f"measuring {name} ({models[name]}) ...")
        rows.append(ROWS[name](models[name], n, per_digit))
    return rows


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _claim(speedup, change) -> tuple[str, str]:
    """A speed claim's two cells: the speedup and the accuracy change in points (n/a when None)."""
    return ("n/a", "n/a") if speedup is None else (f"{speedup:.2f}x", f"{100 * change:+.1f} pt")


def format_systems(rows: list[dict]) -> str:
    head = ("system", "question acc", "drawing acc", "diversity (drawn / real)", "edit acc", "interleaved pairs",
            "thinking", "s/answer", "s/image", "decoder steps", "cached vs recompute speedup",
            "cached vs recompute acc change", "SPRINT speedup", "SPRINT acc change")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        recompute = _claim(r["recompute_speedup"], r["recompute_accuracy_change"])
        sprint = _claim(r["sprint_speedup"], r["sprint_accuracy_change"])
        div = r["diversity"]
        cells = (r["system"], _pct(r["question_accuracy"]), _pct(r["drawing_accuracy"]),
                 f"{div['drawn']:.3f} / {div['real']:.3f}" if div else "n/a", _pct(r["edit_accuracy"]), _pct(r["interleaved_accuracy"]),
                 _pct(r["thinking_accuracy"]), f"{r['seconds_per_answer']:.3f}", f"{r['seconds_per_image']:.3f}",
                 r["decoder_steps"], *recompute, *sprint)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
