"""Training: recipes (configs, one registry), the one loop every stage uses, the text trainer (one
process, DDP, FSDP2), checkpoints, EMA, LoRA.

    from omnidlm.train import recipe, apply_overrides, train
    summary = train(apply_overrides(recipe("synthetic-tiny"), ["max_steps=8"]), out="runs/tiny")
"""

from .loop import Loop, Optim
from .recipes import RECIPES, TrainConfig, apply_overrides, recipe
from .trainer import Trainer, train

__all__ = ["RECIPES", "Loop", "Optim", "TrainConfig", "Trainer", "apply_overrides", "recipe", "train"]
