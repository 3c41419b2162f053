"""Shared fixtures (server fixtures live in tests/support/ and are loaded as plugins), and the markers.

Every test is marked by its directory, so ``-m`` selects a kind whatever the file says: ``integration``
(tests/integration: the sources and sinks in process against private database and Kinesis-API servers),
``e2e`` (tests/e2e: the ``cdcstream`` process itself), ``deploy`` (tests/deploy: the artefacts and the running
daemon under systemd, Prometheus, a container linter). Unmarked: the unit tests. ``make integration`` and
``make e2e`` run one kind; ``make test`` runs everything.
"""

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.support.postgres",
    "tests.support.kinesis",
    "tests.support.mysql",
    "tests.support.engines",
]

KINDS = ("integration", "e2e", "deploy")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(item.path).parent.name
        if kind in KINDS:
            item.add_marker(kind)
