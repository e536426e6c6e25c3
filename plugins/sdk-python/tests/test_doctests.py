"""The examples in the SDK's docstrings run as written."""

import doctest

from support import SDK  # noqa: F401  (first: puts the SDK on sys.path)

# isort: split
from portico_plugin import defaults, plugin, testing


def load_tests(loader, tests, ignore):
    for module in (defaults, plugin, testing):
        tests.addTests(doctest.DocTestSuite(module))
    return tests
