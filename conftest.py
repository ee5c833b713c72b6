"""Repository-level pytest configuration.

`pytester` runs pytest sessions inside tests, to check what the wattbench plugin writes.
"""

pytest_plugins = ["pytester"]
