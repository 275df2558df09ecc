"""`Registry`, the one shape of every extension point: lazy built-ins, run-time members,
entry-point plugins, and one-line errors for what does not fit."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from deepreshape.errors import UsageError
from deepreshape.registry import Registry


@dataclass(frozen=True)
class Thing:
    name: str


def _plugin_site(tmp_path: Path, group: str, lines: list[str]) -> Path:
    """A site directory holding one distribution whose entry points are `lines`."""
    info = tmp_path / "site" / "demo_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "\n".join(lines) + "\n")
    (tmp_path / "site" / "demo_plugin.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass T:\n    name: str\n\n"
        "GOOD = T('good')\nWRONG = T('other')\n")
    return tmp_path / "site"


def test_builtins_load_lazily_and_keep_their_order(monkeypatch) -> None:
    mod = types.ModuleType("lazy_things")
    mod.A, mod.B = Thing("a"), Thing("b")
    monkeypatch.setitem(sys.modules, "lazy_things", mod)
    reg = Registry("thing", "deepreshape.test_things", {"b": "lazy_things:B", "a": "lazy_things:A"})
    assert reg.names() == ["b", "a"]
    assert reg.get("a") is mod.A
    assert reg.names() == ["b", "a"]  # loading one does not reorder the listing
    assert "b" in reg and "c" not in reg and len(reg) == 2


def test_unknown_names_and_clashes_are_one_line_errors() -> None:
    reg = Registry("thing", "deepreshape.test_things")
    reg.register(Thing("cheetah"))
    with pytest.raises(UsageError, match=r"unknown thing 'cheeta'; valid: cheetah; did you mean cheetah\?"):
        reg.get("cheeta")
    with pytest.raises(UsageError, match="registered twice"):
        reg.register(Thing("cheetah"))
    reg.register(Thing("cheetah"), replace=True)
    with pytest.raises(TypeError, match="non-empty str `name`"):
        reg.register(Thing(""))
    reg.unregister("cheetah")
    assert reg.names() == []


def test_plugins_come_from_entry_points_and_a_broken_one_is_skipped(tmp_path: Path, monkeypatch) -> None:
    site = _plugin_site(tmp_path, "deepreshape.test_things", [
        "good = demo_plugin:GOOD", "missing = no_such_module_here:X", "mislabelled = demo_plugin:WRONG"])
    monkeypatch.syspath_prepend(str(site))
    reg = Registry("thing", "deepreshape.test_things")
    with pytest.warns(UserWarning) as caught:
        names = reg.names()
    assert names == ["good"]
    text = " ".join(str(w.message) for w in caught)
    assert "no_such_module_here:X" in text and "skipped" in text
    assert "registered as thing 'mislabelled' but its name is 'other'" in text
    assert reg.get("good").name == "good"
