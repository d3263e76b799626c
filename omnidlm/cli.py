"""The `omnidlm` command line: one entry point, one module per subcommand.

Each module in COMMANDS has `register(subparsers)` (adds its parser and sets `func`) and is
imported only when the command line is built, so `omnidlm --help` stays quick. Every parser
shows each flag's default in its help (`commands/args.py`); `omnidlm --version` prints the version.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    "omnidlm.commands.generate",
    "omnidlm.commands.convert",
    "omnidlm.train.cli",
    "omnidlm.commands.plot",
    "omnidlm.commands.bench",
    "omnidlm.commands.serve",
    "omnidlm.commands.chat",
    "omnidlm.commands.visualize",
    "omnidlm.commands.demo",
    "omnidlm.commands.ask",
    "omnidlm.commands.draw",
]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .commands.args import DefaultsHelpFormatter

    parser = argparse.ArgumentParser(prog="omnidlm", description="Diffusion language models of the LLaDA family.")
    parser.add_argument("--version", action="version", version=f"omnidlm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():
        command.formatter_class = DefaultsHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as error:
        print(f"omnidlm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
