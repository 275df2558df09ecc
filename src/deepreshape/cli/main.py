"""`deepreshape` entry point: discovers command modules in this package and dispatches.

Each module `deepreshape/cli/<name>.py` (other than this one) defines
`register(subparsers) -> None`, which adds its sub-parser and sets `func=run` on it,
where `run(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from deepreshape.errors import DeepReshapeError

# Order in `deepreshape --help`; modules not listed come after, alphabetically.
_ORDER = ["list", "count", "design", "train", "eval", "criticality", "reduce", "snl", "pi",
          "pareto", "report", "demo"]


def command_names() -> list[str]:
    """The sub-commands (modules of `deepreshape.cli`), in `deepreshape --help` order."""
    import deepreshape.cli as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in ("main", "common")]
    return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered, or just `only`.

    Registering one command imports only its module, so `deepreshape count` does not
    pay for torch and the training stack.
    """
    parser = argparse.ArgumentParser(
        prog="deepreshape",
        description="Design, count, train and privately run networks for private inference.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only else command_names():
        module = importlib.import_module(f"deepreshape.cli.{name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"deepreshape: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `deepreshape`; returns the exit code (errors are one line unless --debug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" not in argv:
        warnings.formatwarning = _one_line_warning
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in command_names() else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except DeepReshapeError as e:
        if args.debug:
            raise
        print(f"deepreshape: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("deepreshape: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
