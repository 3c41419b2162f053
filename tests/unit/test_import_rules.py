"""Stage boundaries, read from the imports: the package must keep reading as the data flows.

``sources/ -> changes -> mapping -> records -> sinks/ -> checkpoints/``, with ``pipeline.py`` the only module
that knows every stage (and only ``cli``/``wiring`` knowing the pipeline). Each rule below says which modules
must not import which, and why; a new rule is one more line. Every import counts: at module top, inside a
function (lazy) or under ``TYPE_CHECKING`` (a type is knowledge of the stage too).

A second check imports the modules meant to be pure in a fresh interpreter and fails when one of them loads a
database driver, an AWS or HTTP client, asyncio, processes or metrics, even indirectly.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "cdcstream"

#: Modules that talk to the world: a database driver, an HTTP or AWS client, sockets, processes, threads.
IO = (
    "psycopg",
    "pymysql",
    "aiohttp",
    "aiobotocore",
    "botocore",
    "boto3",
    "socket",
    "ssl",
    "select",
    "selectors",
    "subprocess",
    "multiprocessing",
    "threading",
    "concurrent",
    "asyncio",
    "urllib",
    "http",
    "signal",
    "fcntl",
)


@dataclass(frozen=True)
class Rule:
    """Modules under ``importer`` must not import modules under any of ``forbidden`` (both are dotted
    prefixes: a package covers its modules), except the modules in ``unless``."""

    importer: str
    forbidden: tuple[str, ...]
    why: str
    unless: tuple[str, ...] = ()


RULES = (
    Rule("cdcstream.sources", ("cdcstream.sinks",), "a source yields changes to the pipeline; it never sees a sink"),
    Rule("cdcstream.sources", ("cdcstream.mapping",), "the pipeline maps; a source gets a selector, not the rules"),
    Rule("cdcstream.sources.postgres", ("cdcstream.sources.mysql",), "one engine never reaches into another"),
    Rule("cdcstream.sources.mysql", ("cdcstream.sources.postgres",), "one engine never reaches into another"),
    Rule(
        "cdcstream.sinks",
        ("cdcstream.sources", "cdcstream.mapping", "cdcstream.checkpoints"),
        "a sink delivers records and reports acknowledgements; where they came from is not its business",
    ),
    Rule(
        "cdcstream.mapping",
        (*IO, "cdcstream.sources", "cdcstream.sinks", "cdcstream.checkpoints", "cdcstream.workers"),
        "mapping is pure: changes in, records out, no I/O (worker processes live in cdcstream.workers)",
    ),
    Rule(
        "cdcstream.checkpoints",
        ("cdcstream.sources", "cdcstream.sinks", "cdcstream.mapping"),
        "a checkpoint is stored and ordered without knowing what produced or delivered it",
    ),
    Rule(
        "cdcstream",
        ("cdcstream.pipeline",),
        "only the command line and the wiring know the pipeline; the stages never call back into it",
        unless=("cdcstream.pipeline", "cdcstream.cli", "cdcstream.wiring"),
    ),
)

#: Modules whose import must load none of LOADED_IO, however indirectly: the watermark, the mapping and the
#: sans-IO decoders (and with them what they import: the neutral model, records, the binlog event parsers).
PURE = (
    "cdcstream.checkpoints.watermark",
    "cdcstream.mapping.envelope",
    "cdcstream.mapping.preview",
    "cdcstream.mapping.ruleparse",
    "cdcstream.sources.postgres.decoder",
    "cdcstream.sources.postgres.pgoutput",
    "cdcstream.sources.mysql.binlog.rowevents",
)
#: What a pure module must not load. Narrower than IO: the standard library itself (pathlib, importlib.metadata)
#: loads socket, threading and urllib, which is no I/O of ours.
LOADED_IO = (
    "psycopg",
    "pymysql",
    "aiohttp",
    "aiobotocore",
    "botocore",
    "boto3",
    "subprocess",
    "multiprocessing",
    "asyncio",
    "prometheus_client",
)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def broken(importer: str, imported: str) -> list[Rule]:
    """The rules ``importer`` breaks by importing ``imported``."""
    return [
        rule
        for rule in RULES
        if _under(importer, rule.importer)
        and importer not in rule.unless
        and any(_under(imported, f) for f in rule.forbidden)
    ]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], *, at_load: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path`` (relative ones resolved; ``from package import module``
    counts as importing that module). ``at_load``: only the imports that run when the module is imported (at
    module level, in its ``if``/``try`` blocks, not under ``TYPE_CHECKING`` nor inside a function)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in _run_at_load(tree.body) if at_load else ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if f"{base}.{a.name}" in modules]
    return found


def _run_at_load(body: list[ast.stmt]) -> list[ast.stmt]:
    """The import statements of ``body`` that run when the module is imported."""
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            out += _run_at_load(node.body) + _run_at_load(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                out += _run_at_load(block)
    return out


def test_no_stage_imports_what_it_must_not() -> None:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    problems = []
    for path in paths:
        importer = module_name(path)
        for line, imported in imports(path, modules):
            for rule in broken(importer, imported):
                problems.append(f"{path.relative_to(SRC.parent)}:{line} imports {imported}: {rule.why}")
    assert problems == []


def test_no_import_cycle() -> None:
    """No module imports, while it loads, a module that (however indirectly) imports it back: the stages read
    one way, and none half-exists while another runs. A lazy import inside a function or a package's
    ``__getattr__`` is how a package defers loading, not a cycle."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {
        module_name(p): {m for _, m in imports(p, modules, at_load=True) if m in modules and m != module_name(p)}
        for p in paths
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_load_no_io_module(module: str) -> None:
    code = f"import sys; import {module}; print(' '.join(sorted(m for m in sys.modules if m in {LOADED_IO!r})))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC
    ).stdout.split()
    assert loaded == [], f"importing {module} loads {loaded}"


@pytest.mark.parametrize(
    ("importer", "imported", "rules"),
    [
        ("cdcstream.sinks.kinesis", "cdcstream.sources.postgres.source", 1),
        ("cdcstream.mapping.envelope", "psycopg", 1),
        ("cdcstream.mapping.plan", "cdcstream.workers.pool", 1),
        ("cdcstream.checkpoints.store", "cdcstream.sinks", 1),
        ("cdcstream.telemetry.http", "cdcstream.pipeline", 1),
        ("cdcstream.cli", "cdcstream.pipeline", 0),
        ("cdcstream.sources.mysql.source", "cdcstream.sources.mysql.reader", 0),
        ("cdcstream.sourcesx", "cdcstream.sinks", 0),  # a prefix is a package, not a string prefix
        ("cdcstream.pipeline", "cdcstream.sources.fullload", 0),
    ],
)
def test_the_rules_read_as_written(importer: str, imported: str, rules: int) -> None:
    assert len(broken(importer, imported)) == rules
