"""`omnidlm train`: run a recipe, in one process or under torchrun.

    omnidlm train --recipe synthetic-text --out runs/text
    omnidlm train --recipe synthetic-text --out runs/text --resume          # continue the latest checkpoint
    omnidlm train --recipe chat-lora --out runs/lora data_path=chat.jsonl init_from=models/text-tiny lr=5e-4
    torchrun --nproc_per_node 2 -m omnidlm train --recipe synthetic-tiny --out runs/t parallel=fsdp
    omnidlm train --recipe digits-lladao --out runs/lladao      # the omni model (VAE included)
    omnidlm train --recipe digits-uni --out runs/uni            # LLaDA2.0-Uni (tokenizer, decoder, backbone)

Every recipe comes from one registry (`train/recipes.py`) and every stage trains on one loop
(`train/loop.py`). Trailing `key=value` arguments override fields of the recipe's config
(`model.<field>=...` for the model, `vit_pretrain.steps=...`, ...); `--list` prints every recipe
and the fields of --recipe with their values; `--max-steps` bounds every stage of a recipe.
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model from a recipe")
    p.add_argument("--recipe", default="synthetic-text", help="recipe name (see --list; default: synthetic-text)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<recipe>)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="total optimiser steps (overrides the recipe; for the omni recipes the main stage runs "
                        "this many and every other stage at most this many; default: the recipe's)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run "
                                                         "(omni recipes: replace a non-empty --out)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="checkpoint and stop after this step (the schedule still spans max_steps; default: none)")
    p.add_argument("--list", action="store_true", help="print the recipes and the fields of --recipe, then exit")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of the recipe's config fields, model.<field>=... for the model (see --list)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .recipes import RECIPES, apply_overrides, recipe

    cfg = apply_overrides(recipe(args.recipe), args.overrides)
    if args.max_steps is not None:  # after the overrides, so that it bounds every stage whatever they say
        if args.max_steps < 1:
            raise ValueError(f"--max-steps must be a positive number of steps, got {args.max_steps}")
        cfg = cfg.with_max_steps(args.max_steps)
    if args.list:
        listing = {"recipes": sorted(RECIPES), "recipe": args.recipe, "config": cfg.to_dict()}
        print(json.dumps(listing, indent=2))
        return 0
    out = args.out or f"runs/{args.recipe}"
    return runner_of(cfg)(args, cfg, out)


def runners() -> dict:
    """What trains each kind of config a recipe returns: ONE table (a new kind adds its row)."""
    from . import omni, uni
    from .recipes import TrainConfig

    return {TrainConfig: run_text,  # the trainers are looked up when called (tests replace them)
            omni.OmniTrainConfig: lambda args, cfg, out: run_parts(args, cfg, out, omni.train_omni),
            uni.UniTrainConfig: lambda args, cfg, out: run_parts(args, cfg, out, uni.train_uni)}


def runner_of(cfg):
    table = runners()
    if type(cfg) not in table:
        kinds = ", ".join(kind.__name__ for kind in table)
        raise ValueError(f"no trainer takes a {type(cfg).__name__} (the trained kinds: {kinds})")
    return table[type(cfg)]


def run_text(args, cfg, out: str) -> int:
    """A text recipe: the trainer, resumable, in one process or under torchrun."""
    from .trainer import train

    try:
        summary = train(cfg, out, resume=args.resume, force=args.force, stop_after=args.stop_after)
    except OSError as error:  # e.g. a full disk while saving: the previous checkpoint is intact
        if isinstance(error, (FileNotFoundError, FileExistsError)):
            raise
        print(f"omnidlm train: error: {error} (the previous checkpoint in {out}/checkpoints is intact)")
        return 1
    if summary.get("already_finished"):
        print(f"omnidlm train: {out} had already finished (step {summary['step']}); nothing to train",
              file=sys.stderr)
    print(json.dumps({"out": str(out), **summary}))
    return 0


def run_parts(args, cfg, out: str, fit) -> int:
    """The LLaDA-o and Uni recipes: several parts trained in turn by `fit`, one process, not resumable."""
    for flag, value in (("--resume", args.resume), ("--stop-after", args.stop_after)):
        if value:
            raise ValueError(f"{flag} is not supported by {args.recipe} (its parts are trained in turn, in one run)")
    _, summary = fit(cfg, out, force=args.force)
    print(json.dumps({"out": str(out), **{k: v for k, v in summary.items() if k != "config"}}, default=str))
    return 0
