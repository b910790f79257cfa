"""Every module of shared/ declares `__all__`, and a name imported from it elsewhere is in its `__all__` or private."""

from __future__ import annotations

import ast
import functools
import importlib
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ROOT

# One process scans the sources once (the scan is cached per process), rather than every xdist worker its own.
pytestmark = pytest.mark.xdist_group("public-names")


def _module_name(path: Path) -> str:
    """The dotted name under shared/: "journal", "readiness.html", "readiness" for shared/readiness/__init__.py."""
    parts = path.relative_to(ROOT / "shared").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Every module of shared/ and of its subpackages; shared/__init__.py itself (the name "") exports nothing.
MODULES = sorted(name for name in map(_module_name, (ROOT / "shared").rglob("*.py")) if name)
FOLDERS = ("shared", "functions", "sandbox", "bench", "tests")
SOURCES = [ROOT / "function_app.py", *(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))]


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module a `from` import names, with a relative one (`from .model import x`) resolved against `path`."""
    if not node.level:
        return node.module or ""
    package = path.relative_to(ROOT).parent.parts  # a module and an __init__.py both sit in their package
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _dotted(node: ast.expr) -> str | None:
    """`shared.readiness.html` for that chain of attributes on a name; None for any other expression."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _imports(path: Path, text: str | None = None) -> list[tuple[str, str]]:
    """(module, name) for each name `path` (or `text`, as if at `path`) takes from a module of shared/."""
    found: list[tuple[str, str]] = []
    aliases: dict[str, str] = {}  # a local name bound to a module of shared/ -> that module
    plain: set[str] = set()  # modules of shared/ taken by `import shared.module`, used as shared.module.name
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = _absolute(node, path)
            if module != "shared" and not module.startswith("shared."):
                continue
            inside = module.removeprefix("shared").removeprefix(".")  # "" for the package shared itself
            for alias in node.names:
                dotted = f"{inside}.{alias.name}".lstrip(".")
                if dotted in MODULES:  # from shared import journal, from shared.readiness import html as page
                    aliases[alias.asname or alias.name] = dotted
                elif inside:
                    found.append((inside, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("shared.") and alias.asname:
                    aliases[alias.asname] = alias.name.removeprefix("shared.")
                elif alias.name.startswith("shared."):
                    plain.add(alias.name.removeprefix("shared."))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = _dotted(node.value)
        if owner in aliases:
            found.append((aliases[owner], node.attr))
        elif owner and owner.startswith("shared.") and owner.removeprefix("shared.") in plain:
            found.append((owner.removeprefix("shared."), node.attr))  # shared.x.name after `import shared.x`
    return found


@functools.cache
def imported() -> dict[str, dict[str, set[str]]]:
    """module -> name -> the files importing it; read when a test asks, not at collection (every xdist worker)."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for source in SOURCES:
        for module, name in _imports(source):
            found[module][name].add(str(source.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_a_shared_module_exports_every_name_imported_from_it(module: str) -> None:
    """`__all__` exists, names only what the module has, and holds every public name imported from the module."""
    loaded = importlib.import_module(f"shared.{module}")
    exported = getattr(loaded, "__all__", None)
    assert isinstance(exported, list), f"shared.{module} has no __all__"
    assert len(set(exported)) == len(exported), f"shared.{module}: __all__ names a name twice"
    assert [name for name in exported if not hasattr(loaded, name)] == [], (
        f"shared.{module}: __all__ names what it lacks"
    )
    hidden = {
        name: sorted(files)
        for name, files in imported()[module].items()
        if not name.startswith("_") and name not in exported
    }
    assert hidden == {}, f"imported from shared.{module} but not in its __all__: {hidden}"


def test_no_name_is_exported_by_two_modules_of_shared() -> None:
    """No two modules of shared/ export one name, so a name taken from shared/ means one thing wherever it is read."""
    owners: dict[str, list[str]] = defaultdict(list)
    for module in MODULES:
        for name in importlib.import_module(f"shared.{module}").__all__:
            owners[name].append(module)
    assert {name: modules for name, modules in owners.items() if len(modules) > 1} == {}


def test_the_import_scan_finds_from_imports_and_module_attributes() -> None:
    """The scan finds names taken by `from shared.x import name` and by `from shared import x` then `x.name`."""
    assert "Settings" in imported()["settings"]
    assert "configure" in imported()["logs"]  # shared/cli.py: from shared import logs; logs.configure(...)
    assert "_LIVE" in imported()["journal"]  # tests/test_journal.py: from shared import journal as journal_module


def test_the_import_scan_covers_subpackages() -> None:
    """Modules of subpackages are checked under dotted names, and names imported from them are found."""
    assert {"readiness", "readiness.html", "readiness.csv_export", "readiness.model"} <= set(MODULES)
    assert "render_html" in imported()["readiness.html"]  # tests/test_readiness_page.py
    assert "write_csv" in imported()["readiness.csv_export"]
    assert "build_report" in imported()["readiness"]  # shared/cli.py: from shared.readiness import build_report


def test_the_import_scan_resolves_relative_and_dotted_imports() -> None:
    """`from .model import x` inside a subpackage, `from shared.readiness import html` and `shared.a.b.name` count."""
    source = ROOT / "shared" / "readiness" / "example.py"  # never read: the text is given, the path places it
    text = "\n".join(
        [
            "from .model import Check",
            "from ..logs import audit",
            "from shared.readiness import html as page",
            "import shared.readiness.csv_export",
            "page.render_html",
            "shared.readiness.csv_export.write_csv",
        ]
    )
    assert sorted(_imports(source, text)) == [
        ("logs", "audit"),
        ("readiness.csv_export", "write_csv"),
        ("readiness.html", "render_html"),
        ("readiness.model", "Check"),
    ]
