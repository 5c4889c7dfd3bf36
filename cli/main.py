"""The ``texter`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing ``register(subparsers)``; those modules
import only ``argparse`` at top level so ``texter --help`` stays fast and torch-free
(heavy imports happen inside the command's ``run``).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

# subcommand -> module with `register(subparsers)`; order is the help order.
SUBCOMMANDS: dict[str, str] = {
    "convert": "texter_jax.cli.convert_cli",
    "demo": "texter_jax.cli.demo_cli",
    "explain": "texter_jax.cli.explain_cli",
    "extract-features": "texter_jax.cli.train_cli",  # train_cli registers all three, once
    "train-aligner": "texter_jax.cli.train_cli",
    "train-sae": "texter_jax.cli.train_cli",
    "spectrum": "texter_jax.cli.spectrum_cli",
    "plan": "texter_jax.cli.plan_cli",
    "eval": "texter_jax.cli.eval_cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="texter",
        description="TEXTER in JAX: textual explanations of image-classifier decisions.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    registered: set[str] = set()
    for module_name in SUBCOMMANDS.values():
        if module_name in registered:
            continue  # one module may register several subcommands
        registered.add(module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                continue  # subcommand not part of this install
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, a path that cannot be written: one line naming it
        where = f"{e.filename}: " if e.filename else ""
        what = e.strerror or str(e)
        hint = ("free some space and run it again (finished outputs are kept)"
                if e.errno == errno.ENOSPC else "check the path and its permissions")
        print(f"texter {args.command}: error: {where}{what}; {hint}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
