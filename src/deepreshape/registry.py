"""Registries: the one place that lists the members of an extension point.

deepreshape has five extension points: ReLU-optimization methods, ReLU slot kinds, PI
protocols, sweep backends and data sets. Each keeps a `Registry` of its members; CLI
choices, sweep validation, report and Pareto vocabularies and dry-run sizes read from it,
so a name is typed once, where its member is defined.

Members come from three places, in this order:

1. built-ins, named as ``"module:attribute"`` and imported on first use (listing names
   imports nothing, so ``deepreshape count`` stays fast);
2. `Registry.register` calls (a script or test adds a member at run time);
3. Python entry points of the registry's group (``deepreshape.methods``, ...), so a
   pip-installed plugin works with no edit to the package::

       [project.entry-points."deepreshape.methods"]
       mymethod = "mypackage.mymethod:METHOD"

A member is any object with a ``name`` attribute; the registry checks that it matches the
name it is registered under. A plugin that fails to import is skipped with one warning
naming it, never a crash of every command.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Iterator
from importlib import metadata
from typing import Generic, TypeVar

from deepreshape.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named members of one extension point (see the module docstring).

    `kind` names a member in messages ("method", "protocol"); `group` is the entry-point
    group third parties register under; `builtins` maps name -> ``"module:attribute"``.
    """

    def __init__(self, kind: str, group: str, builtins: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.group = group
        self._lazy: dict[str, str] = dict(builtins or {})
        self._members: dict[str, T] = {}
        self._plugins_loaded = False
        self._plugin_names: set[str] = set()

    # ----------------------------------------------------------------- adding

    def register(self, member: T, *, replace: bool = False) -> T:
        """Add `member` under its ``name``; a second member of one name is an error unless
        `replace` (a plugin must not silently shadow a built-in)."""
        name = getattr(member, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} needs a non-empty str `name`, got {name!r}")
        if not replace and (name in self._members or name in self._lazy):
            raise UsageError(f"{self.kind} {name!r} is registered twice")
        self._lazy.pop(name, None)
        self._members[name] = member
        return member

    def unregister(self, name: str) -> None:
        """Remove a member (tests, and plugins that replace one at run time)."""
        self._members.pop(name, None)
        self._lazy.pop(name, None)
        self._plugin_names.discard(name)  # a plugin put back later loads again

    # ----------------------------------------------------------------- reading

    def names(self) -> list[str]:
        """Every member's name, built-ins first, in registration order; nothing is imported
        beyond the plugins' entry points."""
        self._load_plugins()
        return list(dict.fromkeys([*self._lazy, *self._members]))

    def get(self, name: str) -> T:
        """The member called `name`; UsageError naming the valid ones (and the closest) if
        there is none."""
        self._load_plugins()
        if name in self._members:
            return self._members[name]
        if name in self._lazy:  # kept in _lazy too: `names()` keeps the built-ins' order
            target = self._lazy[name]
            module, _, attr = target.partition(":")
            member = getattr(importlib.import_module(module), attr)
            self._members[name] = self._checked(member, name, target)
            return self._members[name]
        raise UsageError(self.unknown(name))

    def unknown(self, name: object) -> str:
        """The one-line message for a name that is not a member."""
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unknown {self.kind} {name!r}; valid: {', '.join(names)}{hint}"

    def check(self, name: str) -> str:
        """`name` if it is a member, else UsageError (without importing the member)."""
        if name not in self:
            raise UsageError(self.unknown(name))
        return name

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[T]:
        return iter([self.get(n) for n in self.names()])

    def __len__(self) -> int:
        return len(self.names())

    # ----------------------------------------------------------------- plugins

    def _checked(self, member: T, name: str, where: str) -> T:
        got = getattr(member, "name", None)
        if got != name:
            raise UsageError(f"{where}: registered as {self.kind} {name!r} but its name is {got!r}")
        return member

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.group):
            if ep.name in self._plugin_names:
                continue
            if ep.name in self._members or ep.name in self._lazy:
                warnings.warn(f"plugin {ep.value} ({self.group}) names {self.kind} {ep.name!r}, "
                              "which is already registered; ignored", stacklevel=2)
                continue
            try:
                member = ep.load()
                self._members[ep.name] = self._checked(member, ep.name, ep.value)
                self._plugin_names.add(ep.name)
            except Exception as e:  # a broken plugin must not break every command
                warnings.warn(f"plugin {ep.value} ({self.group}) could not be loaded "
                              f"({e.__class__.__name__}: {e}); skipped", stacklevel=2)

    def reload_plugins(self) -> None:
        """Read the entry points again (after a plugin was installed in this process)."""
        importlib.invalidate_caches()
        self._plugins_loaded = False
