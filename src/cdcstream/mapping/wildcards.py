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
    if "%" not in pattern and "[" not in pattern:
        # Most patterns are names (with an "_" that matches any one character): no regex, and no churn of the
        # regex cache when a mapping file has thousands of them.
        if "_" not in pattern:
            return pattern == name
        return len(pattern) == len(name) and all(p == "_" or p == n for p, n in zip(pattern, name, strict=True))
    return compile_pattern(pattern).match(name) is not None


def is_wildcard(pattern: str) -> bool:
    """True when ``pattern`` has ``%`` or ``[...]``: it is meant to match several names.

    ``_`` is left out on purpose: it also matches a literal underscore, and ``order_items`` is meant as a name
    far more often than as a pattern (a real collision is still caught once the tables are known).
    """
    return any(ch in pattern for ch in "%[")


class WildcardIndex:
    """Which of many rules' table-name patterns can match a table name, without testing each one.

    A mapping file may have one rule per table (tens of thousands): testing every rule against every table made
    start-up quadratic. Table patterns without wildcards are looked up by name; patterns whose only wildcard is
    ``_`` by the name with those positions blanked (names like ``orders_2024_01`` share few such shapes); only
    ``%`` and ``[...]`` patterns are tested one by one. :meth:`candidates` is a superset of the entries that
    match (the caller still tests each), in entry order.
    """

    def __init__(self, table_patterns: list[str | None]) -> None:
        """``table_patterns[i]``: entry i's table pattern; None for an entry matching any table name."""
        self._exact: dict[str, list[int]] = {}
        # length -> positions of "_" -> pattern -> entries
        self._shapes: dict[int, dict[tuple[int, ...], dict[str, list[int]]]] = {}
        self._scan: list[int] = []
        for i, pattern in enumerate(table_patterns):
            if pattern is None or "%" in pattern or "[" in pattern:
                self._scan.append(i)
            elif "_" not in pattern:
                self._exact.setdefault(pattern, []).append(i)
            else:
                blanks = tuple(p for p, ch in enumerate(pattern) if ch == "_")
                names = self._shapes.setdefault(len(pattern), {}).setdefault(blanks, {})
                names.setdefault(pattern, []).append(i)

    def candidates(self, table: str) -> list[int]:
        """The entries whose table pattern may match ``table``, in entry order."""
        found = list(self._scan)
        found += self._exact.get(table, ())
        for blanks, names in self._shapes.get(len(table), {}).items():
            chars = list(table)
            for p in blanks:
                chars[p] = "_"
            found += names.get("".join(chars), ())
        found.sort()
        return found
