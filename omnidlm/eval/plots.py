"""Pictures of measurements: the accuracy / speed trade-off of a bench sweep, and a table as an image.

    tradeoff_png(rows, "threshold", "tradeoff.png")   # rows of `omnidlm bench --sweep threshold=...`
    table_png([{"metric": "accuracy", "value": 0.956}, ...], "table.png")

Both draw with matplotlib's Agg backend (no display needed) and write atomically (temp file, then
rename), so a killed run leaves no half-written picture.
"""

from __future__ import annotations

from pathlib import Path

from ..formats.io import atomic_file


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=120)


def _save(plt, fig, path: str | Path) -> None:
    path = Path(path)
    try:
        atomic_file(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", bbox_inches="tight"))
    finally:
        plt.close(fig)


def tradeoff_png(rows: list[dict], key: str, path: str | Path, title: str | None = None) -> None:
    """Accuracy against non-EOS tokens/s, one point per swept value (labelled), the reference apart.

    `rows` are `run_bench` dicts: the swept rows carry `sweep == key` and the value under `key`.
    """
    swept = [r for r in rows if r.get("sweep") == key]
    if not swept:
        raise ValueError(f"no rows swept over {key!r} to plot")
    plt, fig = _figure(6, 4)
    ax = fig.add_subplot()
    xs, ys = [r["tokens_per_s"] for r in swept], [100 * r["accuracy"] for r in swept]
    ax.plot(xs, ys, "o-", color="tab:blue", label=f"engine, {key} swept")
    for r, x, y in zip(swept, xs, ys):
        ax.annotate(f"{r[key]:g}", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    for r in rows:
        if r.get("name") == "reference":
            ax.plot([r["tokens_per_s"]], [100 * r["accuracy"]], "s", color="tab:gray",
                    label="reference sampler (one token per step)")
    low = min(ys + [100 * r["accuracy"] for r in rows if r.get("name") == "reference"])
    ax.set_ylim(max(0.0, low - 10), 101)
    ax.set_xlabel("non-EOS tokens / s")
    ax.set_ylabel("exact match (%)")
    ax.set_title(title or f"accuracy against speed over {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    _save(plt, fig, path)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table_png(rows: list[dict], path: str | Path, title: str | None = None) -> None:
    """A list of dicts (one per row, the same keys) drawn as a table image (PNG, or any format
    matplotlib writes, by the file's suffix)."""
    if not rows:
        raise ValueError("table_png: no rows")
    columns = list(rows[0])
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    chars = [max(len(c), *(len(row[j]) for row in cells)) + 2 for j, c in enumerate(columns)]  # widest text
    width = max(4.0, 0.11 * sum(chars))  # inches: about 0.1 per character at 9 pt
    plt, fig = _figure(width, 0.6 + 0.32 * (len(rows) + 1))
    ax = fig.add_subplot()
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=columns, loc="center", cellLoc="left", colLoc="left",
                     colWidths=[c / sum(chars) for c in chars])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.3)
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8e8e8")
    if title:
        ax.set_title(title, fontsize=10)
    _save(plt, fig, path)
