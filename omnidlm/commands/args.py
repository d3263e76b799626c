"""Validated flag types shared by every command, and the help formatter that shows defaults.

Each type is an argparse `type=`: a bad value stops the command at parse time with
`omnidlm CMD: error: argument --steps: must be a positive integer, got 0` (argparse names the flag),
so no command ever runs with a silently replaced or meaningless number.

    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--threshold", type=probability, default=0.9)
    p.add_argument("--device", type=device, default="cpu")
    p.add_argument("--prompt-ids", type=token_ids, default=None)   # "1,2,-200,3" -> [1, 2, -200, 3]
    p.add_argument("--model", default=shipped_model("lladao-digits"))

`shipped_model(name)` is the path of a model shipped with the package (`models/NAME` beside the
`omnidlm` package), so default models resolve the same from any working directory.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
MAX_SEED = 2**64 - 1


def _number(text: str, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {name}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _checked(text: str, kind, ok, what: str):
    """`text` parsed as `kind` (finite), refused unless `ok(value)`: "must be WHAT, got VALUE"."""
    value = _number(text, kind)
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, lengths, counts)."""
    return _checked(text, int, lambda v: v >= 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (0 meaning "none" or "default", as the flag's help says)."""
    return _checked(text, int, lambda v: v >= 0, "an integer >= 0")


def int_in(low: int, high: int):
    """A type for integers in [low, high] (image scales, characters per line)."""
    def check(text: str) -> int:
        return _checked(text, int, lambda v: low <= v <= high, f"an integer in [{low}, {high}]")

    check.__name__ = f"int_in_{low}_{high}"
    return check


def seed(text: str) -> int:
    """A random seed: an integer in [0, 2**64 - 1] (what torch.Generator.manual_seed takes)."""
    return _checked(text, int, lambda v: 0 <= v <= MAX_SEED, "an integer in [0, 2**64 - 1]")


def finite_float(text: str) -> float:
    """Any finite number (NaN and inf refused): CFG scales."""
    return _number(text, float)


def nonnegative_float(text: str) -> float:
    """A finite number >= 0: temperature."""
    return _checked(text, float, lambda v: v >= 0, ">= 0")


def positive_float(text: str) -> float:
    """A finite number > 0: the factor policy's f, timeouts."""
    return _checked(text, float, lambda v: v > 0, "> 0")


def probability(text: str) -> float:
    """A number in [0, 1]: confidence thresholds, keep ratios."""
    return _checked(text, float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")


def _integers(text: str) -> list[int]:
    """Integers separated by commas and / or spaces, optionally in brackets ("1,2,3", "[1, 2, 3]")."""
    parts = [p for p in re.split(r"[\s,]+", text.strip().strip("[]")) if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None


def token_ids(text: str) -> list[int]:
    """Token ids, `--prompt-ids` of every command: integers separated by commas and / or spaces,
    optionally in brackets ("1,2,-200,3", "[1, 2, 3]"); -200 is LLaDA-V's image placeholder."""
    ids = _integers(text)
    if not ids:
        raise argparse.ArgumentTypeError(f"must hold at least one token id, got {text!r}")
    return ids


def positive_ints(text: str) -> list[int]:
    """A list of positive integers, e.g. `bench --batch-sizes 1,8`."""
    values = _integers(text)
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}")
    return values


def port(text: str) -> int:
    """A TCP port in [1, 65535]."""
    return _checked(text, int, lambda v: 1 <= v <= 65535, "a port in [1, 65535]")


def device(text: str) -> str:
    """A torch device string; a GPU device is refused at once when torch sees no GPU."""
    name = text.strip()
    if name.split(":")[0] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{name}: there is no GPU here (torch.cuda.is_available() "
                                             f"is False; torch {torch.__version__}); use --device cpu")
    elif name != "cpu" and name.split(":")[0] not in ("mps", "xpu"):
        raise argparse.ArgumentTypeError(f"must be cpu or cuda[:N], got {text!r}")
    return name


def shipped_model(name: str) -> str:
    """The path of `models/NAME` shipped beside the package (independent of the working directory)."""
    return str(MODELS_DIR / name)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every optional flag's help ends with its default, unless the help already states it."""

    def _format_action(self, action):
        if not action.help and action.option_strings:  # a flag without help still shows its default
            action = copy.copy(action)
            action.help = self._get_help_string(action)
        return super()._format_action(action)

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default is argparse.SUPPRESS or action.required or not action.option_strings
                or "default" in text or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        shown = "off" if action.default is False else ("none" if action.default is None else "%(default)s")
        if isinstance(action.default, str) and action.default.startswith(str(MODELS_DIR)):
            shown = "the shipped " + Path(action.default).name
        return f"{text} (default: {shown})".strip()
