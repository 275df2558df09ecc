"""Lazy public names of a package: imported on first use, so importing the package stays
light (``import deepreshape`` does not load torch), and a function that shares its name
with a submodule (`deepreshape.optimize.snl` the function, in `optimize/snl.py`) stays the
function after the submodule is imported (Python would otherwise set the package
attribute to the module)."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> None:
    """Give the already-imported `package` the public `names` (name -> module that defines
    it), loaded on first access."""
    module = sys.modules[package]

    class _Package(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name in names:
                value = getattr(importlib.import_module(names[name]), name)
                types.ModuleType.__setattr__(self, name, value)
                return value
            raise AttributeError(f"module {package!r} has no attribute {name!r}")

        def __setattr__(self, name: str, value: Any) -> None:
            # the import system sets a submodule as an attribute of its package: keep a
            # public function of the same name instead
            if name in names and isinstance(value, types.ModuleType):
                return
            super().__setattr__(name, value)

    module.__class__ = _Package
