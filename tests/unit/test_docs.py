"""The documentation holds together: every relative link and ``#anchor`` in the README, ``docs/``, CONTRIBUTING,
the changelog and the benchmark log resolves (with the code host's heading-anchor rules), every page of ``docs/`` is
reachable from the README, every pointer from the code into the documentation names a page and heading that exist,
every file path named in code or docs exists, nothing points at documents that are not in the repository, and the
configuration page names every key."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from tests.support.markdown import anchor, headings, links

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
CHECKED = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md", *PAGES]

#: Where the code points into the documentation: comments, docstrings, messages, deploy files, the example config.
CODE = [
    *(p for d in ("src", "tests", "bench", "deploy", "config", "scripts", ".ci") for p in (ROOT / d).rglob("*")),
    *(ROOT / name for name in ("Makefile", "Dockerfile", "pyproject.toml")),
]
_SKIPPED = {"node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
_CODE_SUFFIXES = {".py", ".toml", ".yml", ".yaml", ".json", ".service", ".md", ".txt", ""}

# docs/page.md, docs/page.md#anchor or docs/page.md, "Heading"
_DOCS_POINTER = re.compile(r'docs/([a-z0-9-]+\.md)(?:#([\w-]+))?(?:, "([^"\n]+)")?')
# README, "Heading" (also README "Heading", README.md, "Heading"); bench/README.md, "Section" for the benchmark log
_README_POINTER = re.compile(r'(bench/)?README(?:\.md)?,? "([^"\n]+)"')
# A file of the repository named by its path, from the top or inside the package (sources/, sinks/, ...).
_PATH = re.compile(
    r"(?<![\w/.-])((?:src|tests|bench|deploy|config|scripts|docs|sources|sinks|mapping|checkpoints|telemetry|runtime)"
    r"/(?:[\w@.-]+/)*[\w@-]+\.(?:py|md|toml|ya?ml|json|service|js))\b"
)
# Documents, trackers and sections that exist outside the repository only.
_ELSEWHERE = re.compile(r"\bDESIGN\.md|\b(?:env|dms|peers|style_ops)\.md\b|§|\b[Ii]ssues? \d+")


def _relative(href: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", href)  # http:, https:, mailto: ... are not checked here


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for page in CHECKED:
        for href in links(page):
            if not _relative(href):
                continue
            path, _, fragment = href.partition("#")
            target = (page.parent / unquote(path)).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {href}"
            if not target.exists() or not target.is_relative_to(ROOT):
                broken.append(f"{where}: no such file")
            elif fragment and (target.suffix != ".md" or fragment not in headings(target)):
                broken.append(f"{where}: no heading with this anchor in {target.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme_and_listed_in_the_index() -> None:
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        for href in links(page):
            path = href.partition("#")[0]
            if _relative(href) and path.endswith(".md"):
                todo.append((page.parent / unquote(path)).resolve())
    assert set(PAGES) <= seen, f"not reachable from README.md: {sorted(p.name for p in set(PAGES) - seen)}"
    index = {href.partition("#")[0] for href in links(DOCS / "index.md")}
    assert {p.name for p in PAGES} - {"index.md"} <= index, "docs/index.md lists every page"


def _code_files() -> list[Path]:
    this = Path(__file__).resolve()
    return [
        p
        for p in CODE
        if p.is_file()
        and p.suffix in _CODE_SUFFIXES
        and p != this
        and not _SKIPPED & set(p.parts)
        and not p.parent.name.endswith(".egg-info")
    ]


def test_pointers_from_the_code_into_the_docs_resolve() -> None:
    readme = set(headings(ROOT / "README.md").values())
    bench_log = (ROOT / "bench" / "README.md").read_text()
    broken = []
    for path in _code_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        where = path.relative_to(ROOT)
        for m in _DOCS_POINTER.finditer(text):
            page, fragment, heading = m.groups()
            if not (DOCS / page).exists():
                broken.append(f"{where}: {m.group()}: no such page")
                continue
            anchors = headings(DOCS / page)
            if fragment and fragment not in anchors:
                broken.append(f"{where}: {m.group()}: no such anchor")
            if heading and anchor(heading) not in anchors:
                broken.append(f"{where}: {m.group()}: no such heading")
        for m in _README_POINTER.finditer(text):
            bench, heading = m.groups()
            if heading not in (bench_log if bench else readme):  # the log's sections are bold paragraph leads
                broken.append(f"{where}: {m.group()}: no such section")
    assert not broken, "\n".join(broken)


def test_every_file_path_named_in_the_code_and_docs_exists() -> None:
    missing = [
        f"{path.relative_to(ROOT)}:{n}: {m.group(1)}"
        for path in [*_code_files(), *CHECKED]
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        for m in _PATH.finditer(line)
        if not (ROOT / m.group(1)).exists() and not (ROOT / "src" / "cdcstream" / m.group(1)).exists()
    ]
    assert not missing, "no such file or directory:\n" + "\n".join(missing)


def test_nothing_points_at_documents_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in [*_code_files(), *CHECKED]
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if _ELSEWHERE.search(line)
    ]
    assert not found, "say the thing itself, or point at a page of docs/:\n" + "\n".join(found)


def test_the_configuration_page_names_every_key() -> None:
    example = (ROOT / "config" / "cdcstream.example.toml").read_text()  # held to the config models elsewhere
    keys = set(re.findall(r"^#?\s*([a-z_]+)\s*=", example, re.MULTILINE))
    page = (DOCS / "configuration.md").read_text()
    missing = sorted(k for k in keys if f"`{k}`" not in page)
    assert keys and not missing, f"keys missing from docs/configuration.md: {missing}"
