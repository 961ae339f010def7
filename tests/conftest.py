"""The test suite's fixtures live in tests/support/plugin.py, its helpers in tests/support."""

pytest_plugins = ["tests.support.plugin"]
