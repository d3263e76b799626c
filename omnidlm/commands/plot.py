"""`omnidlm plot RUN_DIR`: draw the loss curves of a training run (and its evaluations) to a PNG.

    omnidlm plot runs/text                 # writes runs/text/loss.png
    omnidlm plot runs/lladao --out curve.png

Reads `RUN_DIR/metrics.jsonl` as written by `omnidlm train` (`train/loop.py`): records with a
`loss` are steps of a stage (`stage`: "train" for the text recipes; "vae", "vit", "lladao",
"tokenizer", "decoder", ... for the parts of the omni recipes), records with an `exact_match`
are held-out evaluations (drawn on a second axis). One panel per stage.
"""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("plot", help="plot the loss curves of a training run to a PNG")
    p.add_argument("run_dir", help="run directory holding metrics.jsonl")
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/loss.png)")
    p.set_defaults(func=run)


def stages(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Loss curves by stage, in the order the stages ran: {stage: [(step, loss), ...]}."""
    curves: dict[str, list] = {}
    for r in records:
        if r.get("loss") is not None:
            curves.setdefault(r.get("stage", "train"), []).append((r["step"], r["loss"]))
    return curves


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..train.checkpoint import read_metrics

    records = read_metrics(run_dir)
    curves = stages(records)
    evals = [(r["step"], r["exact_match"]) for r in records if "exact_match" in r]
    if not curves:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'} holds no loss records")
    fig, axes = plt.subplots(1, len(curves), figsize=(4 + 3 * len(curves), 4), squeeze=False)
    for ax, (stage, points) in zip(axes[0], curves.items()):
        ax.plot(*zip(*points), label=f"{stage} loss", color="tab:blue")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log" if min(v for _, v in points) > 0 else "linear")
        ax.set_title(stage if len(curves) > 1 else Path(run_dir).resolve().name)
    if evals:
        ax = axes[0][list(curves).index("train")] if "train" in curves else axes[0][-1]
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
