"""End-to-end fixtures: Kinesis endpoints as plain URLs for the daemon's config."""

from __future__ import annotations

import pytest


@pytest.fixture
def moto_url(moto_server: str) -> str:
    """moto: keeps its streams across kinesalite-style client crashes, so SIGKILL tests use it."""
    return moto_server


@pytest.fixture(params=["moto", "kinesalite"])
def kinesis_url(request: pytest.FixtureRequest) -> str:
    """Each end-to-end test runs against both Kinesis-API implementations."""
    return str(request.getfixturevalue(f"{request.param}_server"))
