"""Every module of shared/ declares `__all__`, and a name imported from it elsewhere is in its `__all__` or private."""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ROOT

MODULES = sorted(path.stem for path in (ROOT / "shared").glob("*.py") if path.stem != "__init__")
FOLDERS = ("shared", "functions", "sandbox", "bench", "tests")
SOURCES = [ROOT / "function_app.py", *(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))]


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for each name `path` takes from a module of shared/, by `from` import or attribute access."""
    found: list[tuple[str, str]] = []
    aliases: dict[str, str] = {}  # a local name bound to a module of shared/ -> that module
    plain: set[str] = set()  # modules of shared/ taken by `import shared.module`, used as shared.module.name
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 and path.parent.name == "shared":  # a relative import inside shared/
                module = f"shared.{module}".rstrip(".")
            elif node.level:
                continue
            if module == "shared":  # from shared import journal (as journal_module)
                aliases.update({alias.asname or alias.name: alias.name for alias in node.names})
            elif module.startswith("shared."):
                found += [(module.removeprefix("shared."), alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("shared.") and alias.asname:
                    aliases[alias.asname] = alias.name.removeprefix("shared.")
                elif alias.name.startswith("shared."):
                    plain.add(alias.name.removeprefix("shared."))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in aliases:
            found.append((aliases[node.value.id], node.attr))
        elif (  # shared.module.name after a plain `import shared.module`
            isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "shared"
            and node.value.attr in plain
        ):
            found.append((node.value.attr, node.attr))
    return found


IMPORTED: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
for source in SOURCES:
    for module, name in _imports(source):
        IMPORTED[module][name].add(str(source.relative_to(ROOT)))


@pytest.mark.parametrize("module", MODULES)
def test_a_shared_module_exports_every_name_imported_from_it(module: str) -> None:
    """`__all__` exists, names only what the module has, and holds every public name imported from the module."""
    loaded = importlib.import_module(f"shared.{module}")
    exported = getattr(loaded, "__all__", None)
    assert isinstance(exported, list), f"shared/{module}.py has no __all__"
    assert len(set(exported)) == len(exported), f"shared/{module}.py: __all__ names a name twice"
    assert [name for name in exported if not hasattr(loaded, name)] == [], (
        f"shared/{module}.py: __all__ names what it lacks"
    )
    hidden = {
        name: sorted(files)
        for name, files in IMPORTED[module].items()
        if not name.startswith("_") and name not in exported
    }
    assert hidden == {}, f"imported from shared.{module} but not in its __all__: {hidden}"


def test_the_import_scan_finds_from_imports_and_module_attributes() -> None:
    """The scan finds names taken by `from shared.x import name` and by `from shared import x` then `x.name`."""
    assert "Settings" in IMPORTED["settings"]
    assert "configure" in IMPORTED["logs"]  # shared/cli.py: from shared import logs; logs.configure(...)
    assert "_LIVE" in IMPORTED["journal"]  # tests/test_journal.py: from shared import journal as journal_module
