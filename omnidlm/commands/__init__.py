"""Subcommands of the `omnidlm` command line (see omnidlm/cli.py)."""
