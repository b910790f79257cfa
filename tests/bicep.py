"""The Bicep templates as data: each parsed once per process, with pycep imported only when a test reads one
(the import and a parse cost a process about half a second, which collection used to pay in every process)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any


@cache
def parse_bicep(path: Path) -> dict[str, Any]:
    """The template at `path` as pycep's dict (parameters, variables, resources, modules, outputs)."""
    from pycep import BicepParser

    parsed: Any = BicepParser().parse(file_path=path)
    assert isinstance(parsed, dict), f"{path} did not parse to a template"
    return parsed
