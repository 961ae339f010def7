"""The test suite's fixtures live in tests/support/plugin.py, the rest of what tests share in tests/support."""

pytest_plugins = ["tests.support.plugin"]
