"""PostgreSQL's text output of values made of other values, parsed: arrays (``{1,"a b",NULL}``), records of
composite types (``(1,"x",)``) and hstore (``"k"=>"v"``); and the converters of arrays and records, which render
each element with its own type's converter (``values.TypeRegistry`` builds them). Pure functions of text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Converter = Callable[[str], Any]
"""A text value's rendering (``values.Converter``: element converters come from there)."""


def _unquote(text: str, i: int) -> tuple[str, int]:
    """A double-quoted element with backslash escapes (array and hstore output), ``i`` just past the opening
    quote: the unescaped text and the index just past the closing quote."""
    parts: list[str] = []
    start = i
    while True:
        c = text[i]
        if c == "\\":
            parts.append(text[start:i])
            parts.append(text[i + 1])
            i += 2
            start = i
        elif c == '"':
            parts.append(text[start:i])
            return "".join(parts), i + 1
        else:
            i += 1


def parse_array(text: str, delim: str = ",") -> list[Any]:
    """``array_out`` text -> nested lists of ``str``/``None`` (one list level per dimension).

    Elements are either unquoted (no whitespace, delimiter, braces or quotes; ``NULL`` means SQL NULL) or
    double-quoted with backslash escapes. A dimension decoration (``[0:2]={...}``, non-default lower bounds)
    is dropped: JSON arrays are 0-based lists (docs/types.md, "PostgreSQL types").
    """
    i = 0
    n = len(text)
    if n and text[0] == "[":
        i = text.index("=") + 1
    stack: list[list[Any]] = []
    result: list[Any] | None = None
    while i < n:
        c = text[i]
        if c == "{":
            new: list[Any] = []
            if stack:
                stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == "}":
            done = stack.pop()
            i += 1
            if not stack:
                result = done
                break
        elif c == delim:
            i += 1
        elif c == '"':
            value, i = _unquote(text, i + 1)
            stack[-1].append(value)
        else:
            start = i
            while text[i] != delim and text[i] != "}":
                i += 1
            token = text[start:i]
            stack[-1].append(None if token == "NULL" else token)
    if result is None or i != n:
        raise ValueError(f"malformed array text {text[:80]!r}")
    return result


def parse_record(text: str) -> list[str | None]:
    """``record_out`` text ``(1,"a b",,"x""y")`` -> field texts; an empty unquoted field is NULL."""
    if len(text) < 2 or text[0] != "(" or text[-1] != ")":
        raise ValueError(f"malformed composite text {text[:80]!r}")
    out: list[str | None] = []
    i, n = 1, len(text) - 1
    while True:
        if i < n and text[i] == '"':
            i += 1
            parts: list[str] = []
            start = i
            while True:
                c = text[i]
                if c == '"':
                    if text[i + 1] == '"':  # doubled quote
                        parts.append(text[start : i + 1])
                        i += 2
                        start = i
                        continue
                    parts.append(text[start:i])
                    i += 1
                    break
                if c == "\\":
                    parts.append(text[start:i])
                    parts.append(text[i + 1])
                    i += 2
                    start = i
                    continue
                i += 1
            out.append("".join(parts))
        else:
            end = text.find(",", i)
            if end == -1 or end > n:
                end = n
            out.append(text[i:end] if end > i else None)
            i = end
        if i >= n:
            break
        if text[i] != ",":
            raise ValueError(f"malformed composite text {text[:80]!r}")
        i += 1
        if i == n:  # trailing empty field: "(1,)"
            out.append(None)
            break
    return out


def parse_hstore(text: str) -> dict[str, str | None]:
    """``hstore_out`` text ``"a"=>"1", "b"=>NULL`` -> ``{"a": "1", "b": None}``."""
    out: dict[str, str | None] = {}
    i, n = 0, len(text)

    def quoted(i: int) -> tuple[str, int]:
        if text[i] != '"':
            raise ValueError(f"malformed hstore text {text[:80]!r}")
        return _unquote(text, i + 1)

    while i < n:
        if text[i] in ", ":
            i += 1
            continue
        key, i = quoted(i)
        if text[i : i + 2] != "=>":
            raise ValueError(f"malformed hstore text {text[:80]!r}")
        i += 2
        if text.startswith("NULL", i):
            out[key] = None
            i += 4
        else:
            out[key], i = quoted(i)
    return out


def make_array(elem: Converter | None, delim: str) -> Converter:
    """An array column: a JSON array (nested per dimension), each element rendered like the element type."""
    if elem is None:
        return lambda value: parse_array(value, delim)

    def convert(items: list[Any]) -> list[Any]:
        return [None if x is None else convert(x) if isinstance(x, list) else elem(x) for x in items]

    return lambda value: convert(parse_array(value, delim))


def make_record(
    fields: Sequence[tuple[str, Converter | None]], on_mismatch: Callable[[str, int], Any] | None = None
) -> Converter:
    """A composite column: a JSON object of its attributes, each rendered like its type.

    The attribute list comes from the catalog; after an ``ALTER TYPE ... ADD/DROP ATTRIBUTE`` a value can have
    another field count than the description. ``on_mismatch(text, nfields)`` decides (TypeRegistry: ask for a
    fresh description once, then pass the text through rather than mislabel fields); without it the text is
    passed through.
    """
    names = [n for n, _ in fields]
    convs = [c for _, c in fields]

    def record(value: str) -> Any:
        if not names:
            return {}
        texts = parse_record(value)
        if len(texts) != len(names):
            return value if on_mismatch is None else on_mismatch(value, len(texts))
        return {
            name: (None if t is None else t if conv is None else conv(t))
            for name, conv, t in zip(names, convs, texts, strict=True)
        }

    return record
