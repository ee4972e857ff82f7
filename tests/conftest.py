"""Test-session hooks: the long xdist groups are handed out first.

``pytest -n 2 --dist loadgroup`` gives each worker whole groups in collection order. The Monte Carlo
harnesses and the kill-safety tests are groups of one to three minutes each; collected in file order,
one of them could start last and leave the other worker idle at the end. Moving every grouped test
ahead of the ungrouped ones (each group's tests, and the groups, keep their order) lets the short
tests fill in around them. The order of the tests within a module is otherwise unchanged.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    grouped = [item for item in items if item.get_closest_marker("xdist_group") is not None]
    if grouped:
        rest = [item for item in items if item.get_closest_marker("xdist_group") is None]
        items[:] = grouped + rest
