"""Reading the documentation as the code host renders it: headings with their anchors, and links.

Parsed with markdown-it-py (CommonMark plus tables), so code blocks and inline code never count as headings or
links. Anchors follow GitHub's rules: the heading's text lower-cased, every character that is not a letter, digit,
mark, space, ``-`` or ``_`` removed, spaces turned into ``-``; a repeated anchor gets ``-1``, ``-2``, ...
"""

from __future__ import annotations

import itertools
import unicodedata
from functools import cache
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

_MD = MarkdownIt("commonmark").enable("table")


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading with this text (before de-duplication)."""
    kept = (c for c in heading.lower() if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return "".join(kept).replace(" ", "-")


def _text(inline: Token) -> str:
    """The rendered text of an inline token: text and code spans, without markup."""
    return "".join(c.content for c in inline.children or () if c.type in ("text", "code_inline"))


@cache
def _tokens(path: Path) -> list[Token]:
    return _MD.parse(path.read_text(encoding="utf-8"))


def headings(path: Path) -> dict[str, str]:
    """Each heading's anchor -> its text, in document order."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    tokens = _tokens(path)
    for opening, inline in itertools.pairwise(tokens):
        if opening.type != "heading_open":
            continue
        text = _text(inline)
        slug = anchor(text)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out[slug if n == 0 else f"{slug}-{n}"] = text
    return out


def links(path: Path) -> list[str]:
    """Every link and image target, in document order."""
    out: list[str] = []
    for token in _tokens(path):
        for child in token.children or ():
            if child.type == "link_open":
                out.append(str(child.attrs["href"]))
            elif child.type == "image":
                out.append(str(child.attrs["src"]))
    return out
