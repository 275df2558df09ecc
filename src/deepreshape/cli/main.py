"""`deepreshape` entry point: discovers command modules in this package and dispatches.

Each module `deepreshape/cli/<name>.py` (other than this one) defines
`register(subparsers) -> None`, which adds its sub-parser and sets `func=run` on it,
where `run(args) -> int | None`. A registered method (`deepreshape.methods.METHODS`, a
plugin's included) whose name is not such a module adds its command through
`Method.register_cli`, so a pip-installed method is a `deepreshape` command too.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import os
import pkgutil
import re
import sys
import warnings
from typing import Any

from deepreshape.errors import DeepReshapeError, Preempted, UsageError

# Order in `deepreshape --help`; modules not listed come after, alphabetically.
_ORDER = ["list", "count", "design", "train", "eval", "criticality", "reduce", "snl", "pi",
          "pareto", "report", "demo"]


def module_commands() -> list[str]:
    """The sub-commands that are modules of `deepreshape.cli`, in `deepreshape --help` order."""
    import deepreshape.cli as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in ("main", "common")]
    return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def method_commands() -> list[str]:
    """The registered methods' commands that are not modules of `deepreshape.cli` (plugins)."""
    from deepreshape.methods import METHODS

    modules = set(module_commands())
    return [n for n in METHODS.names() if n not in modules]


def command_names() -> list[str]:
    """Every sub-command, in `deepreshape --help` order (the modules', then the plugin
    methods')."""
    return [*module_commands(), *method_commands()]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (UsageError) with the closest valid form,
    not argparse's usage block and exit. Flags must be spelled out: an abbreviation that
    works today would change meaning when a longer flag is added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # sub-commands are made with this class too
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        command = self.prog.removeprefix("deepreshape").strip()
        raise UsageError(f"{command + ': ' if command else ''}{message}{self._hint(message)}")

    def _hint(self, message: str) -> str:
        parsers = [self] + [p for a in self._actions if isinstance(a, argparse._SubParsersAction)
                            for p in a.choices.values()]  # a sub-command's flags reach us here
        flags = sorted({o for p in parsers for a in p._actions for o in a.option_strings})
        if m := re.search(r"unrecognized arguments: (.+)", message):
            words = m.group(1).split()
            flag = next((w.split("=")[0] for w in words if w.startswith("-")), None)
            if flag:
                close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.5)
                return (f"; did you mean {close[0]}?" if close else
                        f"; valid options: {', '.join(f for f in flags if f.startswith('--'))}")
            return f"; see `{self.prog} --help`"
        if m := re.search(r"invalid choice: '([^']*)' \(choose from (.+)\)", message):
            choices = re.findall(r"'?([\w.:-]+)'?", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.6)
            return f"; did you mean {close[0]}?" if close else ""
        if "required" in message or "expected one argument" in message:
            return f"; see `{self.prog} --help`"
        return ""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered, or just `only`.

    Registering one command imports only its module, so `deepreshape count` does not
    pay for torch and the training stack.
    """
    parser = OneLineParser(
        prog="deepreshape",
        description="Design, count, train and privately run networks for private inference.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = module_commands()
    for name in [only] if only else command_names():
        if name in modules:
            module = importlib.import_module(f"deepreshape.cli.{name}")
            if hasattr(module, "register"):
                module.register(sub)
        else:
            from deepreshape.methods import METHODS

            METHODS.get(name).register_cli(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"deepreshape: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `deepreshape`; returns the exit code (errors are one line unless --debug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" not in argv:
        warnings.formatwarning = _one_line_warning
    first = next((a for a in argv if not a.startswith("-")), None)
    debug = "--debug" in argv
    try:
        # one command's module only (`count` must not pay for torch); the methods' registry
        # is read only when the word is not a module of this package
        known = first in module_commands() or (first is not None and first in method_commands())
        parser = build_parser(first if known else None)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        code = args.func(args)
    except Preempted as e:  # not an error: the run stopped as asked and can be resumed
        print(f"deepreshape: {e}", file=sys.stderr)
        return e.exit_code
    except DeepReshapeError as e:
        if debug:
            raise
        print(f"deepreshape: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("deepreshape: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a path that cannot be read or written: say which and why
        if debug:
            raise
        print(f"deepreshape: error: {os_error_line(e)}", file=sys.stderr)
        return 2 if e.errno in _USER_ERRNOS else 1
    return int(code or 0)


# Path problems the user can fix by naming another path; the others (disk full, I/O
# errors) are failures at run time.
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP}
_ERRNO_HINTS = {
    errno.EACCES: "check its permissions or use another path",
    errno.EPERM: "check its permissions or use another path",
    errno.EROFS: "the file system is read-only; use another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; name a file",
    errno.EEXIST: "a file is in the way; use another path",
    errno.ENOSPC: "the disk is full; files completed before this one are kept",
    errno.EDQUOT: "the disk quota is used up; files completed before this one are kept",
}


def os_error_line(e: OSError) -> str:
    """One line naming the path of an OSError, the reason and what would help."""
    where = e.filename if e.filename is not None else "a file"
    reason = e.strerror or e.__class__.__name__
    hint = _ERRNO_HINTS.get(e.errno)
    return f"{where}: {reason}" + (f" ({hint})" if hint else "")


if __name__ == "__main__":
    sys.exit(main())
