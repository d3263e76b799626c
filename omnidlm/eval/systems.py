"""LLaDA-o against LLaDA2.0-Uni on the same held-out digits (`omnidlm bench --systems lladao,uni`).

One row per system: held-out question accuracy, judged drawing accuracy, seconds per answer and per
image, the image decoder's steps, and SPRINT's speedup and accuracy change on long answers (Uni only:
SPRINT prunes the block-diffusion engine's prefix cache; LLaDA-o has no such engine path).
"""

from __future__ import annotations

SYSTEMS = ("lladao", "uni")


def lladao_row(path: str, n: int, per_digit: int) -> dict:
    from ..train.omni import load_omni
    from . import omni_digits as E

    model, tok = load_omni(path)
    q = E.question_accuracy(model, tok, n)
    d = E.drawing_accuracy(model, tok, per_digit, steps=30)
    return {"system": "lladao", "model": path, "question_accuracy": q["accuracy"], "drawing_accuracy": d["accuracy"],
            "seconds_per_answer": q["seconds_per_answer"], "seconds_per_image": d["seconds_per_image"],
            "decoder_steps": "30 (flow ODE, CFG)", "sprint_speedup": None, "sprint_accuracy_change": None}


def uni_row(path: str, n: int, per_digit: int) -> dict:
    from ..train.uni import load_uni_model
    from . import uni_digits as E

    model, tok = load_uni_model(path)
    q = E.question_accuracy(model, tok, n)
    d = E.drawing_accuracy(model, tok, per_digit)
    s = E.sprint_comparison(model, tok, limit=n)
    return {"system": "uni", "model": path, "question_accuracy": q["accuracy"], "drawing_accuracy": d["accuracy"],
            "seconds_per_answer": q["seconds_per_answer"], "seconds_per_image": d["seconds_per_image"],
            "decoder_steps": "8 (distilled, no CFG)", "sprint_speedup": s["speedup"],
            "sprint_accuracy_change": s["accuracy_with"] - s["accuracy_without"], "sprint": s}


def compare_systems(names: list[str], models: dict, n: int = 100, per_digit: int = 5, progress=None) -> list[dict]:
    rows = []
    for name in names:
        if progress:
            progress(f"measuring {name} ({models[name]}) ...")
        rows.append((lladao_row if name == "lladao" else uni_row)(models[name], n, per_digit))
    return rows


def format_systems(rows: list[dict]) -> str:
    head = ("system", "question acc", "drawing acc", "s/answer", "s/image", "decoder steps", "SPRINT speedup",
            "SPRINT acc change")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sprint = (f"{r['sprint_speedup']:.2f}x", f"{100 * r['sprint_accuracy_change']:+.1f} pt") \
            if r["sprint_speedup"] is not None else ("n/a", "n/a")
        lines.append(f"| {r['system']} | {r['question_accuracy']:.1%} | {r['drawing_accuracy']:.1%} | "
                     f"{r['seconds_per_answer']:.3f} | {r['seconds_per_image']:.3f} | {r['decoder_steps']} | "
                     f"{sprint[0]} | {sprint[1]} |")
    return "\n".join(lines)
