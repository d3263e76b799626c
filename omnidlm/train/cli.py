"""`omnidlm train`: run a recipe, in one process or under torchrun.

    omnidlm train --recipe synthetic-text --out runs/text
    omnidlm train --recipe synthetic-text --out runs/text --resume          # continue the latest checkpoint
    omnidlm train --recipe chat-lora --out runs/lora data_path=chat.jsonl init_from=models/text-tiny lr=5e-4
    torchrun --nproc_per_node 2 -m omnidlm train --recipe synthetic-tiny --out runs/t parallel=fsdp
    omnidlm train --recipe digits-lladao --out runs/lladao      # the omni model (VAE included)
    omnidlm train --recipe digits-uni --out runs/uni            # LLaDA2.0-Uni (tokenizer, decoder, backbone)

Trailing `key=value` arguments override fields of the recipe's TrainConfig (`model.<field>=...`
for the model); `--list` prints the recipes and every field with its value.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model from a recipe")
    p.add_argument("--recipe", default="synthetic-text", help="recipe name (see --list)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<recipe>)")
    p.add_argument("--max-steps", type=int, default=None, help="total optimiser steps (overrides the recipe)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--stop-after", type=int, default=None,
                   help="checkpoint and stop after this step (the schedule still spans max_steps)")
    p.add_argument("--list", action="store_true", help="print the recipes and the fields of --recipe, then exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="TrainConfig overrides, model.<field>=... for the model")
    p.set_defaults(func=run)


def run(args) -> int:
    from .omni import OMNI_RECIPES
    from .recipes import RECIPES, apply_overrides, recipe
    from .uni import UNI_RECIPES

    if args.recipe in OMNI_RECIPES:
        return run_omni(args, OMNI_RECIPES[args.recipe]())
    if args.recipe in UNI_RECIPES:
        return run_omni(args, UNI_RECIPES[args.recipe]())
    if args.recipe not in RECIPES:
        valid = sorted(RECIPES) + sorted(OMNI_RECIPES) + sorted(UNI_RECIPES)
        raise ValueError(f"unknown recipe {args.recipe!r}; valid recipes: {valid}")
    cfg = recipe(args.recipe)
    if args.max_steps is not None:
        cfg = apply_overrides(cfg, [f"max_steps={args.max_steps}"])
    cfg = apply_overrides(cfg, args.overrides)
    if args.list:
        print(json.dumps({"recipes": sorted(RECIPES), "config": cfg.to_dict()}, indent=2))
        return 0
    from .trainer import train

    out = args.out or f"runs/{args.recipe}"
    try:
        summary = train(cfg, out, resume=args.resume, force=args.force, stop_after=args.stop_after)
    except OSError as error:  # e.g. a full disk while saving: the previous checkpoint is intact
        if isinstance(error, (FileNotFoundError, FileExistsError)):
            raise
        print(f"omnidlm train: error: {error} (the previous checkpoint in {out}/checkpoints is intact)")
        return 1
    print(json.dumps({"out": str(out), **summary}))
    return 0


def run_omni(args, cfg) -> int:
    """The LLaDA-o and Uni recipes: their own loops (several parts in turn), one process."""
    import dataclasses

    from .omni import OmniTrainConfig, train_omni
    from .recipes import _parse
    from .uni import train_uni

    fields = {f.name for f in dataclasses.fields(cfg)}
    changes = {"steps": args.max_steps} if args.max_steps is not None else {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"override {item!r} is not key=value with a field of {cfg.recipe}: {sorted(fields)}")
        changes[key] = _parse(value, getattr(cfg, key), key)
    cfg = dataclasses.replace(cfg, **changes)
    if args.list:
        print(json.dumps({"recipe": args.recipe, "config": dataclasses.asdict(cfg)}, indent=2))
        return 0
    if args.resume:
        raise ValueError(f"--resume is not supported by {args.recipe} (a whole run takes 15-20 minutes)")
    fit = train_omni if isinstance(cfg, OmniTrainConfig) else train_uni
    _, summary = fit(cfg, args.out or f"runs/{args.recipe}")
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, default=str))
    return 0
