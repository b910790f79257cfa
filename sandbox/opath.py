"""A small OPATH filter evaluator: `Prop -eq 'value'`, -ne, -like, -notlike, -and, -or, -not, ()."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Collection
from typing import Any

Record = dict[str, Any]
Predicate = Callable[[Record], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op>-(?:eq|ne|like|notlike|and|or|not)\b)"
    r"|'(?P<sq>(?:[^']|'')*)'|\"(?P<dq>(?:[^\"]|\"\")*)\"|(?P<var>\$(?:true|false|null)\b)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))",
    re.IGNORECASE,
)


class FilterError(ValueError):
    """The filter is not valid OPATH, or names a property that cannot be filtered on."""


def compile_filter(text: str, filterable: Collection[str]) -> Predicate:
    """Compile a filter into a predicate; raise FilterError naming what is wrong."""
    tokens = _tokenize(text)
    parser = _Parser(tokens, {name.lower(): name for name in filterable})
    predicate = parser.parse_or()
    if parser.position != len(tokens):
        raise FilterError(f"Invalid filter syntax near {tokens[parser.position][1]!r}")
    return predicate


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise FilterError(f"Invalid filter syntax at position {position}: {text[position : position + 20]!r}")
        position = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "sq":
            value = value.replace("''", "'")
        elif kind == "dq":
            kind, value = "sq", value.replace('""', '"')
        tokens.append((kind, value))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], filterable: dict[str, str]) -> None:
        self.tokens = tokens
        self.position = 0
        self.filterable = filterable

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("end", "")

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        self.position += 1
        return token

    def _is_op(self, name: str) -> bool:
        kind, value = self._peek()
        return kind == "op" and value.lower() == name

    def parse_or(self) -> Predicate:
        left = self.parse_and()
        while self._is_op("-or"):
            self._take()
            right = self.parse_and()
            left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
        return left

    def parse_and(self) -> Predicate:
        left = self.parse_not()
        while self._is_op("-and"):
            self._take()
            right = self.parse_not()
            left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
        return left

    def parse_not(self) -> Predicate:
        if self._is_op("-not"):
            self._take()
            inner = self.parse_not()
            return lambda r: not inner(r)
        if self._peek()[0] == "lp":
            self._take()
            inner = self.parse_or()
            if self._take()[0] != "rp":
                raise FilterError("Invalid filter syntax: missing ')'")
            return inner
        return self.parse_comparison()

    def parse_comparison(self) -> Predicate:
        kind, name = self._take()
        if kind != "word":
            raise FilterError(f"Invalid filter syntax: expected a property name, found {name!r}")
        prop = self.filterable.get(name.lower())
        if prop is None:
            raise FilterError(f'"{name}" is not a recognized filterable property.')
        kind, op = self._take()
        if kind != "op" or op.lower() not in ("-eq", "-ne", "-like", "-notlike"):
            raise FilterError(f"Invalid filter syntax: expected -eq, -ne, -like or -notlike after {name}")
        kind, raw = self._take()
        if kind not in ("sq", "var", "word"):
            raise FilterError(f"Invalid filter syntax: expected a value after {op}")
        expected = _value(kind, raw)
        op = op.lower()

        def predicate(record: Record) -> bool:
            actual = record.get(prop)
            if op in ("-like", "-notlike"):
                hit = fnmatch.fnmatchcase(str(actual).lower(), str(expected).lower())
                return hit if op == "-like" else not hit
            equal = _equal(actual, expected)
            return equal if op == "-eq" else not equal

        return predicate


def _value(kind: str, raw: str) -> Any:
    lowered = raw.lower()
    if kind == "var":
        return {"$true": True, "$false": False, "$null": None}[lowered]
    return raw


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool):
        return str(expected).lower() == str(actual).lower()
    if actual is None or expected is None:
        return actual is None and expected in (None, "")
    return str(actual).lower() == str(expected).lower()
