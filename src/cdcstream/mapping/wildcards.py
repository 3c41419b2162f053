"""DMS object-locator wildcards: ``%`` (any run), ``_`` (one character), ``[_]`` (a literal underscore),
``[ab]`` (a set) and ``[a-d]`` (a range). Matching is case-sensitive, as DMS documents."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Translate a DMS wildcard pattern to an anchored regex; ValueError names what is wrong."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                raise ValueError(f"unclosed '[' at position {i} in {pattern!r}")
            body = pattern[i + 1 : end]
            if not body:
                raise ValueError(f"empty '[]' at position {i} in {pattern!r}")
            parts: list[str] = []
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    lo, hi = body[j], body[j + 2]
                    if lo > hi:
                        raise ValueError(f"bad range '[{lo}-{hi}]' in {pattern!r}")
                    parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
                    j += 3
                else:
                    parts.append(re.escape(body[j]))
                    j += 1
            out.append("[" + "".join(parts) + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def sql_regex(pattern: str) -> str:
    """The same pattern as a PostgreSQL regular expression (``name ~ regex``). The translation only produces
    ``.``, ``.*``, bracket expressions and backslash-escaped non-alphanumeric characters, which mean the same
    in PostgreSQL's advanced regular expressions as in Python's (tested against the server)."""
    return "^" + compile_pattern(pattern).pattern.removesuffix(r"\Z") + "$"


def literal_sql_regex(name: str) -> str:
    """A PostgreSQL regular expression matching exactly ``name``."""
    return "^" + re.escape(name) + "$"


def matches(pattern: str, name: str) -> bool:
    """True when ``name`` matches the DMS wildcard ``pattern``."""
    return compile_pattern(pattern).match(name) is not None


def is_wildcard(pattern: str) -> bool:
    """True when ``pattern`` has ``%`` or ``[...]``: it is meant to match several names.

    ``_`` is left out on purpose: it also matches a literal underscore, and ``order_items`` is meant as a name
    far more often than as a pattern (a real collision is still caught once the tables are known).
    """
    return any(ch in pattern for ch in "%[")
