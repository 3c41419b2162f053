"""Shared fixtures. Server fixtures live in tests/support/ and are loaded as plugins."""

pytest_plugins = ["tests.support.postgres", "tests.support.kinesis", "tests.support.mysql"]
