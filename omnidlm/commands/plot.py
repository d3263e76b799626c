"""`omnidlm plot RUN_DIR`: draw the loss curve of a training run (and its evaluations) to a PNG.

    omnidlm plot runs/text                 # writes runs/text/loss.png
    omnidlm plot runs/text --out curve.png

Reads `RUN_DIR/metrics.jsonl` as written by `omnidlm train`: records with a `loss` are steps,
records with an `exact_match` are held-out evaluations (drawn on a second axis).
"""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("plot", help="plot the loss curve of a training run to a PNG")
    p.add_argument("run_dir", help="run directory holding metrics.jsonl")
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/loss.png)")
    p.set_defaults(func=run)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..train.checkpoint import read_metrics

    records = read_metrics(run_dir)
    steps = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["exact_match"]) for r in records if "exact_match" in r]
    if not steps:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'} holds no loss records")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*steps), label="training loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(Path(run_dir).resolve().name)
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals), "o-", color="tab:orange", label="held-out exact match")
        ax2.set_ylabel("exact match")
        ax2.set_ylim(0, 1.05)
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="center left")
    fig.tight_layout()
    out = Path(out) if out else Path(run_dir) / "loss.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run(args) -> int:
    print(plot_run(args.run_dir, args.out))
    return 0
